"""Lambda's control plane in the local cloud, through boto3 as a client uses it: updates that are all or
nothing, resource policies per version and alias, event source mappings of qualified functions.

The moto server here has plldb's extensions and no Lambda runtime: nothing is invoked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.localcloud.conftest import MotoServer
from tests.localcloud.lambda_support import ACCOUNT, REGION, code_zip, error_of, function_arn


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


# --- Resource policies: one per function, version and alias --------------------------------------------------
def allow(lambda_client: Any, name: str, sid: str, principal: str, qualifier: str | None = None) -> None:
    options = {"Qualifier": qualifier} if qualifier else {}
    lambda_client.add_permission(
        FunctionName=name, StatementId=sid, Action="lambda:InvokeFunction", Principal=principal, **options
    )


def statements(lambda_client: Any, name: str, qualifier: str | None = None) -> list[tuple[str, str, str]]:
    """(Sid, principal service, Resource) of the policy's statements."""
    options = {"Qualifier": qualifier} if qualifier else {}
    policy = json.loads(lambda_client.get_policy(FunctionName=name, **options)["Policy"])
    return [(s["Sid"], s["Principal"]["Service"], s["Resource"]) for s in policy["Statement"]]


def test_the_function_each_version_and_each_alias_have_their_own_resource_policy(
    lambda_client: Any, new_function: Callable[..., str]
) -> None:
    name = new_function()
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    allow(lambda_client, name, "queue", "sqs.amazonaws.com", qualifier="1")
    allow(lambda_client, name, "bucket", "s3.amazonaws.com", qualifier="live")
    allow(lambda_client, name, "api", "apigateway.amazonaws.com")

    assert statements(lambda_client, name, "1") == [("queue", "sqs.amazonaws.com", function_arn(name, "1"))]
    assert statements(lambda_client, function_arn(name, "live")) == [
        ("bucket", "s3.amazonaws.com", function_arn(name, "live"))
    ]
    assert statements(lambda_client, name) == [("api", "apigateway.amazonaws.com", function_arn(name))]

    # A version published later starts without a policy.
    lambda_client.update_function_configuration(FunctionName=name, Description="second")
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "2"
    no_policy = {
        "Code": "ResourceNotFoundException",
        "Message": "The resource you requested does not exist.",
        "Status": 404,
    }
    assert error_of(lambda: lambda_client.get_policy(FunctionName=name, Qualifier="2")) == no_policy
    assert error_of(lambda: lambda_client.get_policy(FunctionName=name, Qualifier="7")) == {
        "Code": "ResourceNotFoundException",
        "Message": f"Function not found: {function_arn(name, '7')}",
        "Status": 404,
    }

    # RemovePermission takes the statement out of the qualifier's policy only.
    lambda_client.remove_permission(FunctionName=name, StatementId="queue", Qualifier="1")
    assert error_of(lambda: lambda_client.get_policy(FunctionName=name, Qualifier="1")) == no_policy
    assert statements(lambda_client, name, "live") == [
        ("bucket", "s3.amazonaws.com", function_arn(name, "live"))
    ]

    # A deleted alias takes its policy with it: the same name starts afresh.
    lambda_client.delete_alias(FunctionName=name, Name="live")
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert error_of(lambda: lambda_client.get_policy(FunctionName=name, Qualifier="live")) == no_policy


ALIAS_PERMISSION_TEMPLATE = """
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
    Properties: {FunctionName: !Ref Handler, FunctionVersion: !GetAtt Version.Version, Name: live}
  Permission:
    Type: AWS::Lambda::Permission
    Properties:
      FunctionName: !Ref Live
      Action: lambda:InvokeFunction
      Principal: s3.amazonaws.com
Outputs:
  FunctionName: {Value: !Ref Handler}
"""


def test_a_cloudformation_permission_on_an_alias_is_in_the_alias_policy(moto_server: MotoServer) -> None:
    cloudformation = moto_server.client("cloudformation")
    lambda_client = moto_server.client("lambda")
    stack_name = f"alias-permission-{uuid.uuid4().hex[:8]}"
    cloudformation.create_stack(StackName=stack_name, TemplateBody=ALIAS_PERMISSION_TEMPLATE)
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    name = stack["Outputs"][0]["OutputValue"]
    (sid,) = [
        row["PhysicalResourceId"]
        for row in cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
        if row["LogicalResourceId"] == "Permission"
    ]

    assert statements(lambda_client, name, "live") == [(sid, "s3.amazonaws.com", function_arn(name, "live"))]
    assert (
        error_of(lambda: lambda_client.get_policy(FunctionName=name))["Code"] == "ResourceNotFoundException"
    )

    cloudformation.update_stack(
        StackName=stack_name,
        TemplateBody=ALIAS_PERMISSION_TEMPLATE.replace("  Permission:", "  Unused:").replace(
            "      FunctionName: !Ref Live\n      Action", "      FunctionName: !Ref Handler\n      Action"
        ),
    )
    # The permission moved from the alias to the function: the alias's statement went with the old resource.
    assert error_of(lambda: lambda_client.get_policy(FunctionName=name, Qualifier="live")) == {
        "Code": "ResourceNotFoundException",
        "Message": "The resource you requested does not exist.",
        "Status": 404,
    }
    assert [s[1:] for s in statements(lambda_client, name)] == [("s3.amazonaws.com", function_arn(name))]


# --- Event source mappings of functions, versions and aliases -----------------------------------------------
MAPPINGS_REGION = "eu-west-3"  # a region of their own: ListEventSourceMappings lists all of its mappings


def test_a_mapping_keeps_the_qualified_arn_it_was_created_with_and_is_listed_by_it(
    moto_server: MotoServer,
) -> None:
    lambda_client = moto_server.session.client("lambda", region_name=MAPPINGS_REGION)
    sqs = moto_server.session.client("sqs", region_name=MAPPINGS_REGION)
    role = moto_server.client("iam").create_role(
        RoleName=f"mapped-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    name, other = (f"mapped-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for function in (name, other):
        lambda_client.create_function(
            FunctionName=function,
            Runtime="python3.12",
            Role=role,
            Handler="app.handle",
            Code={"ZipFile": code_zip()},
        )
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    def arn(function: str, qualifier: str | None = None) -> str:
        return f"arn:aws:lambda:{MAPPINGS_REGION}:{ACCOUNT}:function:{function}" + (
            f":{qualifier}" if qualifier else ""
        )

    def mapping(function_name: str) -> tuple[str, str]:
        url = sqs.create_queue(QueueName=f"feed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        created = lambda_client.create_event_source_mapping(FunctionName=function_name, EventSourceArn=queue)
        return created["UUID"], created["FunctionArn"]

    on_alias_by_name = mapping(f"{name}:live")
    on_alias_by_arn = mapping(arn(name, "live"))
    on_version = mapping(f"{ACCOUNT}:function:{name}:1")  # a partial ARN
    on_function = mapping(arn(name))
    on_other = mapping(other)

    assert [found for _, found in (on_alias_by_name, on_alias_by_arn, on_version, on_function, on_other)] == [
        arn(name, "live"),
        arn(name, "live"),
        arn(name, "1"),
        arn(name),
        arn(other),
    ]
    assert lambda_client.get_event_source_mapping(UUID=on_alias_by_name[0])["FunctionArn"] == arn(
        name, "live"
    )

    def listed(**filters: str) -> list[str]:
        return [m["UUID"] for m in lambda_client.list_event_source_mappings(**filters)["EventSourceMappings"]]

    assert listed() == [m[0] for m in (on_alias_by_name, on_alias_by_arn, on_version, on_function, on_other)]
    assert listed(FunctionName=name) == listed(FunctionName=arn(name)) == [on_function[0]]
    assert listed(FunctionName=arn(name, "live")) == [on_alias_by_name[0], on_alias_by_arn[0]]
    assert listed(FunctionName=f"{name}:live") == [on_alias_by_name[0], on_alias_by_arn[0]]
    assert listed(FunctionName=f"{name}:1") == [on_version[0]]
    assert error_of(lambda: lambda_client.list_event_source_mappings(FunctionName=f"{name}:gone")) == {
        "Code": "ResourceNotFoundException",
        "Message": f"Function not found: {arn(name, 'gone')}",
        "Status": 404,
    }

    # UpdateEventSourceMapping moves a mapping to another function, version or alias the same way.
    lambda_client.update_event_source_mapping(UUID=on_version[0], FunctionName=arn(name, "live"))
    assert listed(FunctionName=f"{name}:live") == [on_alias_by_name[0], on_alias_by_arn[0], on_version[0]]
    assert listed(FunctionName=f"{name}:1") == []


def test_event_source_mappings_are_listed_at_most_100_a_page(moto_server: MotoServer) -> None:
    region = "ap-south-2"  # a region of its own
    lambda_client = moto_server.session.client("lambda", region_name=region)
    sqs = moto_server.session.client("sqs", region_name=region)
    role = moto_server.client("iam").create_role(
        RoleName=f"paged-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    name = f"paged-{uuid.uuid4().hex[:8]}"
    lambda_client.create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="app.handle", Code={"ZipFile": code_zip()}
    )
    created = []
    for number in range(103):
        url = sqs.create_queue(QueueName=f"page-{number}")["QueueUrl"]
        queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        created.append(
            lambda_client.create_event_source_mapping(FunctionName=name, EventSourceArn=queue)["UUID"]
        )

    first = lambda_client.list_event_source_mappings(MaxItems=1000)
    second = lambda_client.list_event_source_mappings(MaxItems=1000, Marker=first["NextMarker"])
    assert [len(first["EventSourceMappings"]), len(second["EventSourceMappings"])] == [100, 3]
    assert "NextMarker" not in second
    small = lambda_client.list_event_source_mappings(FunctionName=name, MaxItems=2)
    assert [m["UUID"] for m in small["EventSourceMappings"]] == created[:2]
    paged = [
        m["UUID"]
        for page in lambda_client.get_paginator("list_event_source_mappings").paginate(
            FunctionName=name, PaginationConfig={"PageSize": 40}
        )
        for m in page["EventSourceMappings"]
    ]
    assert paged == created
