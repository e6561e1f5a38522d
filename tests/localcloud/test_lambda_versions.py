"""Lambda versions, aliases and qualified invocations in the local cloud, through boto3 as a client uses
them: the API's bookkeeping and errors, and invocations that run each version's own configuration."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import Any

import pytest

from tests.localcloud.lambda_support import error_of, function_arn

HANDLER = """
import os

def handle(event, context):
    return {{
        "code": "{code}",
        "setting": os.environ.get("SETTING"),
        "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "invoked": context.invoked_function_arn,
        "pid": os.getpid(),
    }}
"""


def package(code: str) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("app.py", HANDLER.format(code=code))
    return data.getvalue()


@pytest.fixture
def lambda_client(local_cloud: Any) -> Any:
    return local_cloud.client("lambda")


@pytest.fixture
def function(local_cloud: Any, lambda_client: Any) -> str:
    """A function whose $LATEST runs code "one" with SETTING=first."""
    iam = local_cloud.client("iam")
    name = f"versioned-{uuid.uuid4().hex[:8]}"
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="app.handle",
        Code={"ZipFile": package("one")},
        Environment={"Variables": {"SETTING": "first"}},
    )
    return name


def invoke(lambda_client: Any, name: str, qualifier: str | None = None) -> tuple[str, dict]:
    options = {"Qualifier": qualifier} if qualifier else {}
    response = lambda_client.invoke(FunctionName=name, Payload=b"{}", **options)
    assert "FunctionError" not in response, response["Payload"].read()
    return response["ExecutedVersion"], json.loads(response["Payload"].read())


def publish_two_versions(lambda_client: Any, name: str) -> tuple[dict, dict]:
    first = lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=package("two"))
    lambda_client.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"SETTING": "second"}}
    )
    second = lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=package("three"))
    return first, second


# --- bookkeeping -------------------------------------------------------------------------------------------
def test_publish_version_snapshots_configuration_with_its_own_revision(lambda_client, function):
    latest_revision = lambda_client.get_function_configuration(FunctionName=function)["RevisionId"]
    first, second = publish_two_versions(lambda_client, function)
    assert (first["Version"], first["FunctionArn"]) == ("1", function_arn(function, "1"))
    assert (second["Version"], second["FunctionArn"]) == ("2", function_arn(function, "2"))
    revisions = {
        first["RevisionId"],
        second["RevisionId"],
        lambda_client.get_function_configuration(FunctionName=function)["RevisionId"],
    }
    assert len(revisions) == 3 and latest_revision not in revisions
    one = lambda_client.get_function_configuration(FunctionName=function, Qualifier="1")
    assert (one["Version"], one["Environment"], one["RevisionId"]) == (
        "1",
        {"Variables": {"SETTING": "first"}},
        first["RevisionId"],
    )
    by_arn = lambda_client.get_function(FunctionName=function_arn(function, "2"))["Configuration"]
    assert (by_arn["Version"], by_arn["Environment"]) == ("2", {"Variables": {"SETTING": "second"}})
    versions = lambda_client.list_versions_by_function(FunctionName=function)["Versions"]
    assert [(v["Version"], v["FunctionArn"]) for v in versions] == [
        ("$LATEST", function_arn(function, "$LATEST")),
        ("1", function_arn(function, "1")),
        ("2", function_arn(function, "2")),
    ]


def test_publish_version_with_a_stale_revision_is_refused_and_publishes_nothing(lambda_client, function):
    read = lambda_client.get_function_configuration(FunctionName=function)["RevisionId"]
    lambda_client.update_function_configuration(
        FunctionName=function, Environment={"Variables": {"SETTING": "b"}}
    )
    assert error_of(lambda: lambda_client.publish_version(FunctionName=function, RevisionId=read)) == {
        "Code": "PreconditionFailedException",
        "Message": "The Revision Id provided does not match the latest Revision Id. "
        "Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        "Status": 412,
    }
    assert [
        v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=function)["Versions"]
    ] == ["$LATEST"]
    current = lambda_client.get_function_configuration(FunctionName=function)["RevisionId"]
    assert lambda_client.publish_version(FunctionName=function, RevisionId=current)["Version"] == "1"


def test_a_deleted_versions_number_is_never_published_again(lambda_client, function):
    first, second = publish_two_versions(lambda_client, function)
    lambda_client.delete_function(FunctionName=function, Qualifier=second["Version"])
    third = lambda_client.publish_version(FunctionName=function)
    assert (first["Version"], second["Version"], third["Version"]) == ("1", "2", "3")
    assert third["FunctionArn"] == function_arn(function, "3")
    versions = lambda_client.list_versions_by_function(FunctionName=function)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "3"]
    assert invoke(lambda_client, function, "3")[1]["code"] == "three"


def test_aliases_resolve_list_and_take_a_new_revision_on_update(lambda_client, function):
    publish_two_versions(lambda_client, function)
    created = lambda_client.create_alias(FunctionName=function, Name="live", FunctionVersion="1")
    assert (created["AliasArn"], created["FunctionVersion"]) == (function_arn(function, "live"), "1")
    resolved = lambda_client.get_function_configuration(FunctionName=function, Qualifier="live")
    assert (resolved["Version"], resolved["Environment"]) == ("1", {"Variables": {"SETTING": "first"}})
    updated = lambda_client.update_alias(
        FunctionName=function,
        Name="live",
        FunctionVersion="2",
        RoutingConfig={"AdditionalVersionWeights": {"1": 0.25}},
    )
    assert updated["RevisionId"] != created["RevisionId"]
    assert updated["RoutingConfig"] == {"AdditionalVersionWeights": {"1": 0.25}}
    (alias,) = lambda_client.list_aliases(FunctionName=function)["Aliases"]
    assert (alias["Name"], alias["FunctionVersion"], alias["RevisionId"]) == (
        "live",
        "2",
        updated["RevisionId"],
    )
    assert error_of(
        lambda: lambda_client.update_alias(
            FunctionName=function, Name="live", RoutingConfig={"AdditionalVersionWeights": {"7": 0.5}}
        )
    ) == {
        "Code": "ResourceNotFoundException",
        "Message": f"Function not found: {function_arn(function, '7')}",
        "Status": 404,
    }


def test_a_version_an_alias_references_cannot_be_deleted(lambda_client, function):
    publish_two_versions(lambda_client, function)
    lambda_client.create_alias(FunctionName=function, Name="live", FunctionVersion="2")
    lambda_client.create_alias(
        FunctionName=function,
        Name="canary",
        FunctionVersion="2",
        RoutingConfig={"AdditionalVersionWeights": {"1": 0.1}},
    )
    for version, aliases in (("1", "[canary]"), ("2", "[canary, live]")):
        assert error_of(
            lambda v=version: lambda_client.delete_function(FunctionName=function, Qualifier=v)
        ) == {
            "Code": "ResourceConflictException",
            "Message": f"Unable to delete version because the following aliases reference it: {aliases}",
            "Status": 409,
        }
    assert error_of(lambda: lambda_client.delete_function(FunctionName=function, Qualifier="$LATEST")) == {
        "Code": "InvalidParameterValueException",
        "Message": "$LATEST version cannot be deleted without deleting the function.",
        "Status": 400,
    }
    # A version that does not exist: 204, nothing deleted.
    lambda_client.delete_function(FunctionName=function, Qualifier="9")
    lambda_client.update_alias(FunctionName=function, Name="canary", RoutingConfig={})
    lambda_client.delete_function(FunctionName=function_arn(function, "1"))
    versions = lambda_client.list_versions_by_function(FunctionName=function)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "2"]
    assert error_of(lambda: lambda_client.get_function(FunctionName=function, Qualifier="1")) == {
        "Code": "ResourceNotFoundException",
        "Message": f"Function not found: {function_arn(function, '1')}",
        "Status": 404,
    }


# --- invocations ---------------------------------------------------------------------------------------------
def test_qualified_invocations_run_each_versions_own_code_and_configuration(lambda_client, function):
    publish_two_versions(lambda_client, function)
    lambda_client.create_alias(FunctionName=function, Name="live", FunctionVersion="1")
    one_version, one = invoke(lambda_client, function, "1")
    two_version, two = invoke(lambda_client, f"{function}:2")
    live_version, live = invoke(lambda_client, function_arn(function, "live"))
    latest_version, latest = invoke(lambda_client, function)
    assert (one_version, one["code"], one["setting"], one["version"], one["invoked"]) == (
        "1",
        "one",
        "first",
        "1",
        function_arn(function, "1"),
    )
    assert (two_version, two["code"], two["setting"], two["version"], two["invoked"]) == (
        "2",
        "two",
        "second",
        "2",
        function_arn(function, "2"),
    )
    assert (live_version, live["code"], live["version"], live["invoked"]) == (
        "1",
        "one",
        "1",
        function_arn(function, "live"),
    )
    assert (latest_version, latest["code"], latest["setting"], latest["version"], latest["invoked"]) == (
        "$LATEST",
        "three",
        "second",
        "$LATEST",
        function_arn(function),
    )
    assert live["pid"] == one["pid"]  # an alias runs in its version's environments
    assert len({one["pid"], two["pid"], latest["pid"]}) == 3
    assert error_of(lambda: lambda_client.invoke(FunctionName=function, Qualifier="7")) == {
        "Code": "ResourceNotFoundException",
        "Message": f"Function not found: {function_arn(function, '7')}",
        "Status": 404,
    }


def test_an_alias_routes_each_invocation_by_its_weights(lambda_client, function, local_cloud, monkeypatch):
    publish_two_versions(lambda_client, function)
    lambda_client.create_alias(
        FunctionName=function,
        Name="live",
        FunctionVersion="2",
        RoutingConfig={"AdditionalVersionWeights": {"1": 0.3}},
    )
    draws = iter([0.29, 0.3, 0.0, 0.99])
    monkeypatch.setattr(local_cloud.lambdas, "random", lambda: next(draws))
    executed = [invoke(lambda_client, function, "live") for _ in range(4)]
    assert [(version, body["code"], body["invoked"]) for version, body in executed] == [
        ("1", "one", function_arn(function, "live")),
        ("2", "two", function_arn(function, "live")),
        ("1", "one", function_arn(function, "live")),
        ("2", "two", function_arn(function, "live")),
    ]


def test_deleting_a_version_retires_its_environments(lambda_client, function, local_cloud):
    publish_two_versions(lambda_client, function)
    _, before = invoke(lambda_client, function, "1")
    pids = {env.pid for env in local_cloud.lambdas.environments() if env.spec.function_name == function}
    assert before["pid"] in pids
    lambda_client.delete_function(FunctionName=function, Qualifier="1")
    remaining = [env for env in local_cloud.lambdas.environments() if env.spec.function_name == function]
    assert [env.spec.version for env in remaining] == []  # only version 1 had run
    _, latest = invoke(lambda_client, function)
    assert latest["pid"] != before["pid"]


def test_a_scheduled_rule_naming_an_alias_invokes_it(lambda_client, function, local_cloud, monkeypatch):
    publish_two_versions(lambda_client, function)
    results: list[Any] = []
    target = function_arn(function, "live")
    scheduled = local_cloud.scheduler._invoke

    def invoke(arn: str, payload: bytes) -> None:
        """This rule's invocation made synchronous, so the test sees what it ran; the scheduler keeps
        firing other rules of the local cloud meanwhile (the helper stack's sweep), as it always does."""
        if arn != target:
            scheduled(arn, payload)
            return
        results.append(local_cloud.lambdas.invoke(arn, payload))

    monkeypatch.setattr(local_cloud.scheduler, "_invoke", invoke)
    lambda_client.create_alias(FunctionName=function, Name="live", FunctionVersion="2")
    events = local_cloud.client("events")
    rule = f"{function}-tick"
    events.put_rule(Name=rule, ScheduleExpression="rate(1 hour)")
    events.put_targets(Rule=rule, Targets=[{"Id": "fn", "Arn": function_arn(function, "live")}])
    try:
        (firing,) = local_cloud.scheduler.fire(rule)
    finally:
        events.remove_targets(Rule=rule, Ids=["fn"])
        events.delete_rule(Name=rule)
    assert (firing.target_arn, firing.error) == (function_arn(function, "live"), None)
    (result,) = results
    body = json.loads(result.payload)
    assert (result.executed_version, body["code"], body["invoked"]) == (
        "2",
        "two",
        function_arn(function, "live"),
    )


RECORDER = """
import os

import boto3


def handle(event, context):
    for record in event["Records"]:
        boto3.client("s3").put_object(
            Bucket=os.environ["BUCKET"], Key=record["body"], Body=os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        )
"""


def test_a_queue_mapped_to_an_alias_delivers_to_the_version_the_alias_points_to(local_cloud, lambda_client):
    """The mapping keeps the alias's ARN (not the version it pointed to when it was created)."""
    name = f"mapped-{uuid.uuid4().hex[:8]}"
    bucket = f"{name}-deliveries"
    local_cloud.client("s3").create_bucket(Bucket=bucket)
    role = local_cloud.client("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("app.py", RECORDER)
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="app.handle",
        Code={"ZipFile": data.getvalue()},
        Environment={"Variables": {"BUCKET": bucket}},
    )
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_configuration(FunctionName=name, Description="second")
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    sqs = local_cloud.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mapping = lambda_client.create_event_source_mapping(FunctionName=f"{name}:live", EventSourceArn=queue)
    assert mapping["FunctionArn"] == function_arn(name, "live")

    def delivered(body: str) -> str:
        sqs.send_message(QueueUrl=url, MessageBody=body)  # the queue invokes its mappings as it takes it
        return str(local_cloud.client("s3").get_object(Bucket=bucket, Key=body)["Body"].read().decode())

    assert delivered("before") == "1"
    lambda_client.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert delivered("after") == "2"


# --- UpdateFunctionConfiguration's Environment -----------------------------------------------------------------
def test_environment_without_variables_keeps_them_and_empty_variables_remove_them(lambda_client, function):
    kept = lambda_client.update_function_configuration(FunctionName=function, Environment={})
    assert kept["Environment"] == {"Variables": {"SETTING": "first"}}
    assert lambda_client.get_function_configuration(FunctionName=function)["Environment"] == {
        "Variables": {"SETTING": "first"}
    }
    cleared = lambda_client.update_function_configuration(
        FunctionName=function, Environment={"Variables": {}}
    )
    assert "Environment" not in cleared
    configuration = lambda_client.get_function_configuration(FunctionName=function)
    assert "Environment" not in configuration
    _, body = invoke(lambda_client, function)
    assert body["setting"] is None
