"""Provisioned concurrency in the local cloud, through boto3 as a client uses it, and in CloudFormation.

The errors are the service's own, as recorded against AWS; the allocation status moves with an injected
clock, never with time passing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from plldb.instrumentation import traffic
from plldb.localcloud.moto_extensions import awslambda_provisioned
from plldb.localcloud.moto_extensions.stepfunctions_executions import ManualClock
from tests.localcloud.conftest import MotoServer
from tests.localcloud.lambda_support import code_zip, error_of, function_arn


def without_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[ManualClock]:
    """The clock allocations take their time on; a test moves it."""
    manual = ManualClock()
    monkeypatch.setattr(awslambda_provisioned.PROVISIONING, "clock", manual)
    yield manual


@pytest.fixture
def lambda_client(moto_server: MotoServer) -> Any:
    return moto_server.client("lambda")


@pytest.fixture
def function(moto_server: MotoServer, lambda_client: Any) -> str:
    """A function with versions 1, 2 and 3, and alias live on version 1."""
    name = f"provisioned-{uuid.uuid4().hex[:8]}"
    role = moto_server.client("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="app.handle",
        Code={"ZipFile": code_zip()},
    )
    for number in range(3):
        lambda_client.update_function_configuration(FunctionName=name, Description=f"version {number + 1}")
        lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return name


def put(lambda_client: Any, name: str, qualifier: str, amount: int) -> dict[str, Any]:
    return without_metadata(
        lambda_client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=qualifier, ProvisionedConcurrentExecutions=amount
        )
    )


def get(lambda_client: Any, name: str, qualifier: str) -> dict[str, Any]:
    return without_metadata(
        lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
    )


def status(config: dict[str, Any]) -> tuple[str, int, int, int]:
    return (
        config["Status"],
        config["RequestedProvisionedConcurrentExecutions"],
        config["AllocatedProvisionedConcurrentExecutions"],
        config["AvailableProvisionedConcurrentExecutions"],
    )


# --- the API -----------------------------------------------------------------------------------------------
def test_an_allocation_is_in_progress_for_two_minutes_then_ready(
    lambda_client: Any, function: str, clock: ManualClock
) -> None:
    response = lambda_client.put_provisioned_concurrency_config(
        FunctionName=function, Qualifier="live", ProvisionedConcurrentExecutions=3
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert without_metadata(response) == {
        "RequestedProvisionedConcurrentExecutions": 3,
        "AllocatedProvisionedConcurrentExecutions": 0,
        "AvailableProvisionedConcurrentExecutions": 0,
        "Status": "IN_PROGRESS",
        "LastModified": "2030-01-01T00:00:00+0000",
    }
    clock.advance(119)
    assert status(get(lambda_client, function, "live")) == ("IN_PROGRESS", 3, 0, 0)
    clock.advance(1)
    assert get(lambda_client, function, "live") == {
        "RequestedProvisionedConcurrentExecutions": 3,
        "AllocatedProvisionedConcurrentExecutions": 3,
        "AvailableProvisionedConcurrentExecutions": 3,
        "Status": "READY",
        "LastModified": "2030-01-01T00:00:00+0000",
    }
    (listed,) = lambda_client.list_provisioned_concurrency_configs(FunctionName=function)[
        "ProvisionedConcurrencyConfigs"
    ]
    assert listed == {"FunctionArn": function_arn(function, "live"), **get(lambda_client, function, "live")}

    # A new amount is a new allocation; deleting the configuration is a 204 whether or not it exists.
    clock.advance(60)
    assert status(put(lambda_client, function_arn(function), "live", 5)) == ("IN_PROGRESS", 5, 0, 0)
    assert get(lambda_client, function, "live")["LastModified"] == "2030-01-01T00:03:00+0000"
    for _ in range(2):
        deleted = lambda_client.delete_provisioned_concurrency_config(FunctionName=function, Qualifier="live")
        assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert (
        lambda_client.list_provisioned_concurrency_configs(FunctionName=function)[
            "ProvisionedConcurrencyConfigs"
        ]
        == []
    )


def test_plldb_reads_the_aliases_with_provisioned_concurrency(lambda_client: Any, function: str) -> None:
    assert traffic.provisioned_aliases(lambda_client, function) == {}
    put(lambda_client, function, "live", 4)
    put(lambda_client, function, "2", 1)
    assert traffic.provisioned_aliases(lambda_client, function) == {"live": 4, "2": 1}


def test_errors_are_the_services_own(moto_server: MotoServer, lambda_client: Any, function: str) -> None:
    missing_function = f"missing-{uuid.uuid4().hex[:8]}"
    not_found = {"Code": "ResourceNotFoundException", "Status": 404}

    def no_alias(name: str, alias: str) -> dict[str, Any]:
        return {**not_found, "Message": f"Cannot find alias arn: {function_arn(name, alias)}"}

    def no_version(name: str, version: str) -> dict[str, Any]:
        return {**not_found, "Message": f"Function not found: {function_arn(name, version)}"}

    not_alias_or_version = {
        "Code": "InvalidParameterValueException",
        "Message": "The function resource provided must be an alias or a published version.",
        "Status": 400,
    }
    unpublished = {
        "Code": "InvalidParameterValueException",
        "Message": "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
        "Status": 400,
    }

    def get_error(name: str, qualifier: str) -> dict[str, Any]:
        return error_of(
            lambda: lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        )

    def delete_error(name: str, qualifier: str) -> dict[str, Any]:
        return error_of(
            lambda: lambda_client.delete_provisioned_concurrency_config(
                FunctionName=name, Qualifier=qualifier
            )
        )

    def put_error(name: str, qualifier: str, amount: int = 1, client: Any = lambda_client) -> dict[str, Any]:
        return error_of(
            lambda: client.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier=qualifier, ProvisionedConcurrentExecutions=amount
            )
        )

    assert get_error(function, "1") == {
        "Code": "ProvisionedConcurrencyConfigNotFoundException",
        "Message": "No Provisioned Concurrency Config found for this function",
        "Status": 404,
    }
    assert get_error(missing_function, "noalias") == no_alias(missing_function, "noalias")
    assert get_error(function, "noalias") == no_alias(function, "noalias")
    assert get_error(function, "10") == no_version(function, "10")
    assert get_error(function, "$LATEST") == not_alias_or_version

    assert error_of(
        lambda: lambda_client.list_provisioned_concurrency_configs(FunctionName=missing_function)
    ) == {
        **not_found,
        "Message": f"Function not found: {function_arn(missing_function)}",
    }

    assert delete_error(missing_function, "1") == no_version(missing_function, "1")
    assert delete_error(function, "noalias") == no_alias(function, "noalias")
    assert delete_error(function, "10") == no_version(function, "10")
    assert delete_error(function, "$LATEST") == not_alias_or_version

    unvalidated = moto_server.session.client("lambda", config=Config(parameter_validation=False))
    assert put_error(function, "live", 0, unvalidated) == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value '0' at 'provisionedConcurrentExecutions' failed to "
        "satisfy constraint: Member must have value greater than or equal to 1",
        "Status": 400,
    }
    assert put_error(missing_function, "noalias") == no_alias(missing_function, "noalias")
    assert put_error(missing_function, "1") == no_version(missing_function, "1")
    assert put_error(function, "doesnotexist") == no_alias(function, "doesnotexist")
    assert put_error(function, "10") == no_version(function, "10")
    assert put_error(function, "$LATEST") == unpublished
    lambda_client.create_alias(FunctionName=function, Name="edge", FunctionVersion="$LATEST")
    assert put_error(function, "edge") == unpublished
    assert (
        lambda_client.list_provisioned_concurrency_configs(FunctionName=function)[
            "ProvisionedConcurrencyConfigs"
        ]
        == []
    )


def test_a_version_has_one_allocation_directly_or_through_one_alias(
    lambda_client: Any, function: str
) -> None:
    lambda_client.create_alias(FunctionName=function, Name="blue", FunctionVersion="1")
    put(lambda_client, function, "1", 2)
    already = {
        "Code": "ResourceConflictException",
        "Message": "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version",
        "Status": 409,
    }
    assert error_of(lambda: put(lambda_client, function, "live", 1)) == already

    lambda_client.delete_provisioned_concurrency_config(FunctionName=function, Qualifier="1")
    put(lambda_client, function, "live", 1)
    assert error_of(lambda: put(lambda_client, function, "1", 1)) == {
        "Code": "ResourceConflictException",
        "Message": "Version is pointed by a Provisioned Concurrency alias",
        "Status": 409,
    }
    assert error_of(lambda: put(lambda_client, function, "blue", 1)) == already  # two aliases, one version
    put(lambda_client, function, "live", 6)  # the alias's own allocation changes freely
    configs = lambda_client.list_provisioned_concurrency_configs(FunctionName=function)
    assert [
        (c["FunctionArn"], c["RequestedProvisionedConcurrentExecutions"])
        for c in configs["ProvisionedConcurrencyConfigs"]
    ] == [(function_arn(function, "live"), 6)]


def test_an_alias_moved_to_another_version_allocates_there_anew(
    lambda_client: Any, function: str, clock: ManualClock
) -> None:
    put(lambda_client, function, "live", 2)
    put(lambda_client, function, "3", 1)
    clock.advance(120)
    assert status(get(lambda_client, function, "live")) == ("READY", 2, 2, 2)

    # Weights on the alias leave the allocation where it is.
    lambda_client.update_alias(
        FunctionName=function, Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}
    )
    assert status(get(lambda_client, function, "live")) == ("READY", 2, 2, 2)

    lambda_client.update_alias(FunctionName=function, Name="live", FunctionVersion="2", RoutingConfig={})
    assert status(get(lambda_client, function, "live")) == ("IN_PROGRESS", 2, 0, 0)
    clock.advance(120)
    assert status(get(lambda_client, function, "live")) == ("READY", 2, 2, 2)

    # Version 3 has its own allocation: the alias cannot take its own there.
    assert error_of(
        lambda: lambda_client.update_alias(FunctionName=function, Name="live", FunctionVersion="3")
    ) == {
        "Code": "ResourceConflictException",
        "Message": "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version",
        "Status": 409,
    }
    assert lambda_client.get_alias(FunctionName=function, Name="live")["FunctionVersion"] == "2"
    assert status(get(lambda_client, function, "live")) == ("READY", 2, 2, 2)


def test_deleting_an_alias_or_a_version_deletes_its_configuration(lambda_client: Any, function: str) -> None:
    put(lambda_client, function, "live", 2)
    put(lambda_client, function, "3", 1)
    lambda_client.delete_alias(FunctionName=function, Name="live")
    lambda_client.delete_function(FunctionName=function, Qualifier="3")
    assert (
        lambda_client.list_provisioned_concurrency_configs(FunctionName=function)[
            "ProvisionedConcurrencyConfigs"
        ]
        == []
    )
    lambda_client.create_alias(FunctionName=function, Name="live", FunctionVersion="1")
    assert error_of(lambda: get(lambda_client, function, "live"))["Code"] == (
        "ProvisionedConcurrencyConfigNotFoundException"
    )


def test_configurations_are_listed_at_most_50_a_page(lambda_client: Any, function: str) -> None:
    for number in range(48):
        lambda_client.update_function_configuration(FunctionName=function, Description=f"more {number}")
        lambda_client.publish_version(FunctionName=function)
    versions = [str(number) for number in range(1, 52)]
    for version in versions:
        put(lambda_client, function, version, 1)

    first = lambda_client.list_provisioned_concurrency_configs(FunctionName=function, MaxItems=50)
    rest = lambda_client.list_provisioned_concurrency_configs(
        FunctionName=function, Marker=first["NextMarker"]
    )
    assert (len(first["ProvisionedConcurrencyConfigs"]), len(rest["ProvisionedConcurrencyConfigs"])) == (
        50,
        1,
    )
    assert "NextMarker" not in rest
    paged = [
        config["FunctionArn"]
        for page in lambda_client.get_paginator("list_provisioned_concurrency_configs").paginate(
            FunctionName=function, PaginationConfig={"PageSize": 20}
        )
        for config in page["ProvisionedConcurrencyConfigs"]
    ]
    assert paged == [function_arn(function, version) for version in versions]


# --- CloudFormation ----------------------------------------------------------------------------------------
ALIAS_TEMPLATE = """
Parameters:
  Amount: {Type: Number, Default: 0}
Conditions:
  Provisioned: !Not [!Equals [!Ref Amount, 0]]
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - {Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}
  Handler:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Code: {ZipFile: "def handler(event, context):\\n    return event\\n"}
  Version:
    Type: AWS::Lambda::Version
    Properties: {FunctionName: !Ref Handler}
  Live:
    Type: AWS::Lambda::Alias
    Properties:
      FunctionName: !Ref Handler
      FunctionVersion: !GetAtt Version.Version
      Name: live
      ProvisionedConcurrencyConfig: !If
        - Provisioned
        - {ProvisionedConcurrentExecutions: !Ref Amount}
        - !Ref AWS::NoValue
Outputs:
  FunctionName: {Value: !Ref Handler}
"""


def deploy(session: boto3.Session, stack_name: str, template: str, create: bool, **parameters: str) -> str:
    cloudformation = session.client("cloudformation")
    operation = cloudformation.create_stack if create else cloudformation.update_stack
    operation(
        StackName=stack_name,
        TemplateBody=template,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
    )
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE"), stack
    return str(stack["Outputs"][0]["OutputValue"])


def test_an_alias_property_is_allocated_when_the_stack_completes(
    moto_server: MotoServer, lambda_client: Any, clock: ManualClock
) -> None:
    stack_name = f"provisioned-alias-{uuid.uuid4().hex[:8]}"
    name = deploy(moto_server.session, stack_name, ALIAS_TEMPLATE, True, Amount="3")
    assert status(get(lambda_client, name, "live")) == ("READY", 3, 3, 3)

    deploy(moto_server.session, stack_name, ALIAS_TEMPLATE, False, Amount="5")
    assert status(get(lambda_client, name, "live")) == ("READY", 5, 5, 5)

    deploy(moto_server.session, stack_name, ALIAS_TEMPLATE, False, Amount="0")
    assert (
        lambda_client.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
        == []
    )


SAM_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Handler:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      InlineCode: "def handler(event, context):\\n    return event\\n"
      AutoPublishAlias: live
      ProvisionedConcurrencyConfig:
        ProvisionedConcurrentExecutions: 2
Outputs:
  FunctionName: {Value: !Ref Handler}
"""


def test_a_sam_function_with_provisioned_concurrency_provisions_its_alias(
    moto_server: MotoServer, lambda_client: Any, clock: ManualClock
) -> None:
    name = deploy(moto_server.session, f"provisioned-sam-{uuid.uuid4().hex[:8]}", SAM_TEMPLATE, True)
    assert traffic.provisioned_aliases(lambda_client, name) == {"live": 2}
    (config,) = lambda_client.list_provisioned_concurrency_configs(FunctionName=name)[
        "ProvisionedConcurrencyConfigs"
    ]
    assert (config["FunctionArn"], status(config)) == (function_arn(name, "live"), ("READY", 2, 2, 2))
