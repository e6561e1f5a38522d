"""The deploy helpers against a moto server: the asset bucket, emptying it, and reading the stack."""

from __future__ import annotations

import json

import boto3
import botocore.exceptions
import pytest

from plldb.bootstrap import deploy
from plldb.bootstrap.helper_stack import TEMPLATE_VERSION, load_helper_stack
from plldb.errors import PlldbError

ACCOUNT_ID = "123456789012"


@pytest.fixture
def s3(moto_endpoint):
    return boto3.client("s3")


def test_the_asset_bucket_is_created_private_and_encrypted(s3):
    bucket = deploy.asset_bucket_name(ACCOUNT_ID, "us-east-1") + "-t1"
    events: list[str] = []

    deploy.ensure_asset_bucket(s3, bucket, "us-east-1", ACCOUNT_ID, events.append)

    assert events == [f"Creating the asset bucket {bucket}"]
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}

    deploy.ensure_asset_bucket(s3, bucket, "us-east-1", ACCOUNT_ID, events.append)
    assert events == [f"Creating the asset bucket {bucket}"], "an existing private bucket is left alone"


def test_assets_are_uploaded_once_per_content_hash(s3):
    bucket = "plldb-assets-upload-test"
    s3.create_bucket(Bucket=bucket)
    assert deploy.upload_asset(s3, bucket, "handlers/abc.zip", b"zip", ACCOUNT_ID) is True
    assert deploy.upload_asset(s3, bucket, "handlers/abc.zip", b"zip", ACCOUNT_ID) is False
    assert s3.get_object(Bucket=bucket, Key="handlers/abc.zip")["Body"].read() == b"zip"


def test_deleting_the_bucket_removes_every_version_and_delete_marker(s3):
    bucket = "plldb-assets-versioned-test"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(3):
        s3.put_object(Bucket=bucket, Key="layer/a.zip", Body=f"v{i}".encode())
    s3.put_object(Bucket=bucket, Key="handlers/b.zip", Body=b"b")
    s3.delete_object(Bucket=bucket, Key="handlers/b.zip")  # leaves a delete marker
    events: list[str] = []

    assert deploy.delete_bucket(s3, bucket, events.append) is True

    assert events == [], "the command reports the deletion once, in its result"
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.head_bucket(Bucket=bucket)
    assert missing.value.response["Error"]["Code"] == "404"
    assert deploy.delete_bucket(s3, bucket, events.append) is False


def test_a_missing_helper_stack_is_one_clear_error(moto_endpoint):
    with pytest.raises(PlldbError) as error:
        load_helper_stack(boto3.Session(region_name="us-east-1"), "plldb-nowhere")
    assert error.value.one_line() == (
        "The plldb helper stack 'plldb-nowhere' was not found in us-east-1. Run 'plldb bootstrap setup' first."
    )


def test_a_stack_of_another_plldb_version_is_reported_with_the_fix(moto_endpoint):
    session = boto3.Session(region_name="us-east-1")
    session.client("cloudformation").create_stack(
        StackName="plldb-old",
        TemplateBody='{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}',
    )
    with pytest.raises(PlldbError) as error:
        load_helper_stack(session, "plldb-old")
    assert error.value.one_line() == (
        "The plldb helper stack 'plldb-old' in us-east-1 was deployed by another plldb version "
        f"(template unknown, this plldb needs {TEMPLATE_VERSION}). Run 'plldb bootstrap setup' to update it."
    )


def test_a_stack_of_this_version_without_its_outputs_is_reported_as_not_ready(moto_endpoint):
    session = boto3.Session(region_name="us-east-1")
    session.client("cloudformation").create_stack(
        StackName="plldb-half",
        TemplateBody=json.dumps(
            {
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"TemplateVersion": {"Value": TEMPLATE_VERSION}},
            }
        ),
    )
    with pytest.raises(PlldbError) as error:
        load_helper_stack(session, "plldb-half")
    assert error.value.one_line() == (
        "The plldb helper stack 'plldb-half' in us-east-1 is not ready (status CREATE_COMPLETE). "
        "Run 'plldb bootstrap setup' to create or repair it."
    )
