"""The names plldb checks before it calls AWS: every region AWS has is a region to plldb."""

from __future__ import annotations

import json
from pathlib import Path

import botocore
import pytest

from plldb.aws import validate_region
from plldb.errors import PlldbError

PARTITIONS = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text())
REGIONS = sorted(
    name
    for partition in PARTITIONS["partitions"]
    for name in partition["regions"]
    if not name.endswith("-global")  # aws-global, aws-cn-global...: endpoints, not regions a CLI takes
)


def test_botocore_lists_the_regions_of_every_partition():
    assert {"us-east-1", "us-gov-west-1", "cn-northwest-1", "eusc-de-east-1"} <= set(REGIONS)


@pytest.mark.parametrize("region", REGIONS)
def test_every_region_botocore_knows_is_accepted(region):
    assert validate_region(region) == region


@pytest.mark.parametrize(
    "region", ["mars-1", "us-east", "US-EAST-1", "us-east-1 ", "us_east_1", "aws-global", ""]
)
def test_what_is_not_a_region_name_is_one_line_naming_the_fix(region):
    with pytest.raises(PlldbError) as refused:
        validate_region(region)
    assert (refused.value.message, refused.value.fix) == (
        f"{region!r} is not an AWS region name.",
        "Pass --region as the AWS CLI takes it, e.g. us-east-1.",
    )
