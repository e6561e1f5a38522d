"""Lambda's control plane in the local cloud, through boto3 as a client uses it: updates that are all or
nothing, resource policies per version and alias, event source mappings of qualified functions.

The moto server here has plldb's extensions and no Lambda runtime: nothing is invoked.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.localcloud.conftest import MotoServer

ACCOUNT = "123456789012"
REGION = "us-east-1"


def code_zip() -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("app.py", "def handle(event, context):\n    return event\n")
    return data.getvalue()


def function_arn(name: str, qualifier: str | None = None) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}" + (f":{qualifier}" if qualifier else "")


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as failed:
        call()
    return {
        "Code": failed.value.response["Error"]["Code"],
        "Message": failed.value.response["Error"]["Message"],
        "Status": failed.value.response["ResponseMetadata"]["HTTPStatusCode"],
    }


@pytest.fixture
def lambda_client(moto_server: MotoServer) -> Any:
    return moto_server.client("lambda")


@pytest.fixture
def new_function(moto_server: MotoServer, lambda_client: Any) -> Callable[..., str]:
    """Creates a function (with its own role) and returns its name."""

    def create(**settings: Any) -> str:
        name = f"control-{uuid.uuid4().hex[:8]}"
        role = moto_server.client("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")
        lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="app.handle",
            Code={"ZipFile": code_zip()},
            **settings,
        )
        return name

    return create


def configuration(lambda_client: Any, name: str) -> dict[str, Any]:
    found = dict(lambda_client.get_function_configuration(FunctionName=name))
    found.pop("ResponseMetadata")
    return found


# --- UpdateFunctionConfiguration is all or nothing -----------------------------------------------------------
def test_an_update_naming_a_missing_layer_version_is_refused_and_changes_nothing(
    lambda_client: Any, new_function: Callable[..., str]
) -> None:
    layer = lambda_client.publish_layer_version(
        LayerName=f"kept-{uuid.uuid4().hex[:8]}", Content={"ZipFile": code_zip()}
    )
    name = new_function(
        Environment={"Variables": {"SETTING": "deployed"}},
        Layers=[layer["LayerVersionArn"]],
        Timeout=7,
    )
    before = configuration(lambda_client, name)
    missing = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:gone-{uuid.uuid4().hex[:8]}:4"

    # Environment, Timeout and LoggingConfig come before Layers: moto used to apply them, then fail.
    refused = error_of(
        lambda: lambda_client.update_function_configuration(
            FunctionName=name,
            Environment={"Variables": {"SETTING": "instrumented"}},
            Timeout=30,
            LoggingConfig={"LogFormat": "JSON"},
            Layers=[layer["LayerVersionArn"], missing],
        )
    )

    assert refused == {
        "Code": "InvalidParameterValueException",
        "Message": f"Layer version {missing} does not exist.",
        "Status": 400,
    }
    assert configuration(lambda_client, name) == before


def test_a_function_cannot_be_created_with_a_missing_layer_version(
    lambda_client: Any, new_function: Callable[..., str]
) -> None:
    missing = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:never-{uuid.uuid4().hex[:8]}:1"
    assert error_of(lambda: new_function(Layers=[missing])) == {
        "Code": "InvalidParameterValueException",
        "Message": f"Layer version {missing} does not exist.",
        "Status": 400,
    }


def test_an_update_with_a_stale_revision_changes_nothing(
    lambda_client: Any, new_function: Callable[..., str]
) -> None:
    name = new_function()
    stale = configuration(lambda_client, name)["RevisionId"]
    lambda_client.update_function_configuration(FunctionName=name, Description="meanwhile")
    before = configuration(lambda_client, name)

    refused = error_of(
        lambda: lambda_client.update_function_configuration(
            FunctionName=name, RevisionId=stale, LoggingConfig={"LogFormat": "JSON"}, Timeout=30
        )
    )

    assert (refused["Code"], refused["Status"]) == ("PreconditionFailedException", 412)
    assert configuration(lambda_client, name) == before
