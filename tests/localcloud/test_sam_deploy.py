"""`sam deploy`, offline: realistic SAM applications deploy to the local cloud as they deploy to AWS."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plldb.errors import PlldbError
from plldb.localcloud import sam_deploy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello-sam"
TEMPLATES = Path(__file__).resolve().parent / "sam_templates"
ACCOUNT = "123456789012"
BUCKET = f"plldb-sam-artifacts-{ACCOUNT}-us-east-1"


def resources(session: boto3.Session, stack_name: str) -> dict[str, tuple[str, str]]:
    rows = session.client("cloudformation").list_stack_resources(StackName=stack_name)[
        "StackResourceSummaries"
    ]
    return {row["LogicalResourceId"]: (row["ResourceType"], row["PhysicalResourceId"]) for row in rows}


def zip_names(data: bytes) -> list[str]:
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


def function_zip(session: boto3.Session, function_name: str) -> bytes:
    """The deployment package of a function: GetFunction names the uploaded object it was created from."""
    location = session.client("lambda").get_function(FunctionName=function_name)["Code"]["Location"]
    key = location.rsplit("/", 1)[1]
    return bytes(session.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


# --- zips and packaging -------------------------------------------------------------------------------------
file_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
trees = st.dictionaries(
    st.tuples(st.sampled_from(["", "pkg/", "pkg/sub/"]), file_names).map("".join),
    st.binary(max_size=200),
    min_size=1,
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_zip_of_a_folder_depends_only_on_its_files(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, bytes]
) -> None:
    first, second = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    for root, order in ((first, sorted(tree)), (second, sorted(tree, reverse=True))):
        for name in order:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tree[name])
        (root / "__pycache__").mkdir(exist_ok=True)
        (root / "__pycache__" / "cached.pyc").write_bytes(b"compiled")
    os.utime(second / sorted(tree)[0], (1_000_000, 1_000_000))

    data = sam_deploy.zip_directory(first)

    assert data == sam_deploy.zip_directory(second)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(archive.namelist()) == sorted(tree)
    assert {name: archive.read(name) for name in archive.namelist()} == tree


def test_packaging_uploads_code_and_layers_by_content_hash(session: boto3.Session) -> None:
    sam_deploy.ensure_bucket(session, "package-test")
    packager = sam_deploy.Packager(session, "package-test", lambda _line: None)

    packaged = packager.package(sam_deploy.load_template(EXAMPLE / "template.yaml"), EXAMPLE)

    s3 = session.client("s3")
    hello_zip = sam_deploy.zip_directory(EXAMPLE / "hello")
    layer_zip = sam_deploy.zip_directory(EXAMPLE / "layers" / "shared")
    hello_key = hashlib.sha256(hello_zip).hexdigest()
    layer_key = hashlib.sha256(layer_zip).hexdigest()
    assert packaged["Resources"]["HelloFunction"]["Properties"]["CodeUri"] == f"s3://package-test/{hello_key}"
    assert (
        packaged["Resources"]["SharedLayer"]["Properties"]["ContentUri"] == f"s3://package-test/{layer_key}"
    )
    assert s3.get_object(Bucket="package-test", Key=hello_key)["Body"].read() == hello_zip
    assert zip_names(layer_zip) == ["python/shared_util.py"]
    assert zip_names(hello_zip) == ["app.py"]
    assert packaged["Resources"]["HelloFunction"]["Properties"]["Layers"] == [{"Ref": "SharedLayer"}]


def test_missing_code_folder_is_reported_before_anything_is_deployed(
    session: boto3.Session, tmp_path: Path
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: src/, Handler: app.handler, Runtime: python3.12}\n"
    )

    with pytest.raises(PlldbError) as error:
        sam_deploy.deploy(session, template, "missing-code")

    assert error.value.message == f"'src/' (relative to {tmp_path}) does not exist."
    assert error.value.fix == "Fix the path in the template."


# --- the example application ----------------------------------------------------------------------------------
def test_hello_sam_deploys_with_its_layer_and_environment(session: boto3.Session) -> None:
    lines: list[str] = []

    values = sam_deploy.deploy(session, EXAMPLE / "template.yaml", "hello-sam-deploy", on_event=lines.append)

    lambda_client = session.client("lambda")
    rows = resources(session, "hello-sam-deploy")
    layer_arn = values["SharedLayerArn"]
    assert set(values) == {
        "HelloFunctionName",
        "HelloFunctionArn",
        "GoodbyeFunctionName",
        "GoodbyeFunctionArn",
        "SharedLayerArn",
    }
    assert layer_arn.startswith(f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:hello-sam-shared:")
    assert rows["HelloFunction"] == ("AWS::Lambda::Function", values["HelloFunctionName"])
    assert rows["GoodbyeFunction"] == ("AWS::Lambda::Function", values["GoodbyeFunctionName"])
    hello = lambda_client.get_function_configuration(FunctionName=values["HelloFunctionName"])
    goodbye = lambda_client.get_function_configuration(FunctionName=values["GoodbyeFunctionName"])
    for configuration in (hello, goodbye):
        assert (configuration["Runtime"], configuration["Handler"]) == ("python3.13", "app.lambda_handler")
        assert (configuration["Timeout"], configuration["MemorySize"]) == (10, 256)
        assert [layer["Arn"] for layer in configuration["Layers"]] == [layer_arn]
    assert hello["Environment"]["Variables"] == {"GREETING": "Hello", "HELLO_SUFFIX": "!"}
    assert goodbye["Environment"]["Variables"] == {"GREETING": "Hello"}
    assert zip_names(function_zip(session, values["HelloFunctionName"])) == ["app.py"]
    assert "CREATE_COMPLETE              AWS::CloudFormation::Stack           hello-sam-deploy" in lines


def test_redeploying_changed_code_updates_only_that_function(session: boto3.Session, tmp_path: Path) -> None:
    app = tmp_path / "hello-sam"
    shutil.copytree(EXAMPLE, app)
    first = sam_deploy.deploy(session, app / "template.yaml", "hello-sam-update")
    lambda_client = session.client("lambda")

    def sha(output: str) -> str:
        return str(lambda_client.get_function_configuration(FunctionName=first[output])["CodeSha256"])

    hello_before, goodbye_before = sha("HelloFunctionName"), sha("GoodbyeFunctionName")
    handler = app / "hello" / "app.py"
    handler.write_text(handler.read_text().replace('"function": "hello"', '"function": "hello-v2"'))

    second = sam_deploy.deploy(session, app / "template.yaml", "hello-sam-update")

    assert second == first
    assert sha("HelloFunctionName") != hello_before
    assert sha("GoodbyeFunctionName") == goodbye_before
    new_code = zipfile.ZipFile(io.BytesIO(function_zip(session, first["HelloFunctionName"]))).read("app.py")
    assert b'"function": "hello-v2"' in new_code
    stack = session.client("cloudformation").describe_stacks(StackName="hello-sam-update")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"


def test_redeploying_unchanged_application_changes_nothing(session: boto3.Session) -> None:
    first = sam_deploy.deploy(session, EXAMPLE / "template.yaml", "hello-sam-noop")
    cloudformation = session.client("cloudformation")
    events_before = cloudformation.describe_stack_events(StackName="hello-sam-noop")["StackEvents"]
    lines: list[str] = []

    second = sam_deploy.deploy(session, EXAMPLE / "template.yaml", "hello-sam-noop", on_event=lines.append)

    assert second == first
    assert lines == ["Updating stack hello-sam-noop", "Stack hello-sam-noop is up to date"]
    assert cloudformation.describe_stack_events(StackName="hello-sam-noop")["StackEvents"] == events_before
    assert (
        cloudformation.describe_stacks(StackName="hello-sam-noop")["Stacks"][0]["StackStatus"]
        == "CREATE_COMPLETE"
    )


def test_updating_the_shared_layer_moves_both_functions_to_the_new_version(
    session: boto3.Session, tmp_path: Path
) -> None:
    app = tmp_path / "hello-sam"
    shutil.copytree(EXAMPLE, app)
    first = sam_deploy.deploy(session, app / "template.yaml", "hello-sam-layer")
    (app / "layers" / "shared" / "python" / "shared_util.py").write_text(
        'def format_message(greeting, name, suffix=""):\n    return f"{greeting} {name}{suffix}"\n'
    )

    second = sam_deploy.deploy(session, app / "template.yaml", "hello-sam-layer")

    lambda_client = session.client("lambda")
    assert second["SharedLayerArn"] != first["SharedLayerArn"]
    for output in ("HelloFunctionName", "GoodbyeFunctionName"):
        layers = lambda_client.get_function_configuration(FunctionName=second[output])["Layers"]
        assert [layer["Arn"] for layer in layers] == [second["SharedLayerArn"]]
    versions = lambda_client.list_layer_versions(LayerName="hello-sam-shared")["LayerVersions"]
    assert first["SharedLayerArn"] not in [version["LayerVersionArn"] for version in versions]
    assert [row[0] for row in resources(session, "hello-sam-layer").values()].count(
        "AWS::Lambda::LayerVersion"
    ) == 1


# --- realistic applications ------------------------------------------------------------------------------------
def test_rest_api_application(session: boto3.Session) -> None:
    values = sam_deploy.deploy(session, TEMPLATES / "rest-api" / "template.yaml", "items-service")

    rows = resources(session, "items-service")
    api_id = rows["ServerlessRestApi"][1]
    apigateway = session.client("apigateway")
    assert values["ApiUrl"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com/Prod/"
    assert apigateway.get_rest_api(restApiId=api_id)["name"] == "items-service"
    paths = {
        item["path"]: sorted(item.get("resourceMethods", {}))
        for item in apigateway.get_resources(restApiId=api_id)["items"]
    }
    assert paths == {"/": [], "/health": ["ANY"], "/items": ["GET", "POST"], "/items/{itemId}": ["GET"]}
    # OpenApiVersion is set, so SAM creates no extra "Stage" stage.
    assert [stage["stageName"] for stage in apigateway.get_stages(restApiId=api_id)["item"]] == ["Prod"]
    function_name = values["ItemsFunctionName"]
    assert values["ItemsFunctionAlias"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function_name}:live"
    alias = session.client("lambda").get_alias(FunctionName=function_name, Name="live")
    assert (
        alias["FunctionVersion"]
        == rows[next(k for k in rows if k.startswith("ItemsFunctionVersion"))][1].split(":")[-1]
    )
    table = session.client("dynamodb").describe_table(TableName=values["TableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "itemId", "KeyType": "HASH"}]
    role_name = values["ItemsFunctionRoleArn"].split("/")[-1]
    inline = session.client("iam").get_role_policy(RoleName=role_name, PolicyName="ItemsFunctionRolePolicy0")
    assert inline["PolicyDocument"]["Statement"][0]["Resource"][0] == (
        f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{values['TableName']}"
    )
    environment = session.client("lambda").get_function_configuration(FunctionName=rows["HealthFunction"][1])[
        "Environment"
    ]["Variables"]
    assert environment == {"TABLE_NAME": values["TableName"], "STAGE": "dev", "VERBOSE": "true"}


def test_http_api_application(session: boto3.Session) -> None:
    values = sam_deploy.deploy(session, TEMPLATES / "http-api" / "template.yaml", "greeter")

    rows = resources(session, "greeter")
    api_id = rows["ServerlessHttpApi"][1]
    gateway = session.client("apigatewayv2")
    api = gateway.get_api(ApiId=api_id)
    assert (api["Name"], api["ProtocolType"]) == ("greeter", "HTTP")
    assert (
        values["HttpApiEndpoint"]
        == api["ApiEndpoint"]
        == f"https://{api_id}.execute-api.us-east-1.amazonaws.com"
    )
    assert values["HttpApiUrl"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com/"
    assert sorted(route["RouteKey"] for route in gateway.get_routes(ApiId=api_id)["Items"]) == [
        "GET /hello/{name}",
        "POST /echo",
    ]
    assert [stage["StageName"] for stage in gateway.get_stages(ApiId=api_id)["Items"]] == ["$default"]
    function = session.client("lambda").get_function(FunctionName=values["GreeterFunctionArn"])
    assert function["Configuration"]["Architectures"] == ["arm64"]
    assert [layer["Arn"] for layer in function["Configuration"]["Layers"]] == [values["CommonLayerArn"]]
    assert function["Tags"] == {"team": "greeters", "lambda:createdBy": "SAM"}


def test_scheduled_workflow_application(session: boto3.Session) -> None:
    values = sam_deploy.deploy(
        session,
        TEMPLATES / "scheduled-workflow" / "template.yaml",
        "workflow",
        parameters={"ScheduleExpression": "rate(1 hour)"},
    )

    rows = resources(session, "workflow")
    lambda_client = session.client("lambda")
    worker_arn = lambda_client.get_function_configuration(FunctionName=values["WorkerFunctionName"])[
        "FunctionArn"
    ]
    reporter_arn = lambda_client.get_function_configuration(FunctionName=values["ReporterFunctionName"])[
        "FunctionArn"
    ]
    machine = session.client("stepfunctions").describe_state_machine(
        stateMachineArn=values["StateMachineArn"]
    )
    definition = json.loads(machine["definition"])
    assert machine["name"] == values["StateMachineName"]
    assert (definition["States"]["Work"]["Resource"], definition["States"]["Report"]["Resource"]) == (
        worker_arn,
        reporter_arn,
    )
    events = session.client("events")
    schedule = events.describe_rule(Name=rows["ReporterFunctionEvery5Minutes"][1])
    assert schedule["ScheduleExpression"] == "rate(1 hour)"
    (target,) = events.list_targets_by_rule(Rule=rows["ReporterFunctionEvery5Minutes"][1])["Targets"]
    assert (target["Arn"], target["Input"]) == (reporter_arn, '{"report": "periodic"}')
    pattern = json.loads(
        events.describe_rule(Name=rows["ReporterFunctionOnObjectCreated"][1])["EventPattern"]
    )
    assert pattern == {"source": ["aws.s3"], "detail-type": ["Object Created"]}
    (mapping,) = lambda_client.list_event_source_mappings(FunctionName=values["WorkerFunctionName"])[
        "EventSourceMappings"
    ]
    queue_attributes = session.client("sqs").get_queue_attributes(
        QueueUrl=values["QueueUrl"], AttributeNames=["QueueArn"]
    )
    assert (mapping["EventSourceArn"], mapping["BatchSize"]) == (
        queue_attributes["Attributes"]["QueueArn"],
        5,
    )


def test_nested_application(session: boto3.Session) -> None:
    values = sam_deploy.deploy(
        session, TEMPLATES / "nested-app" / "template.yaml", "shop", parameters={"Greeting": "Hi there"}
    )

    rows = resources(session, "shop")
    cloudformation = session.client("cloudformation")
    nested = cloudformation.describe_stacks(StackName=values["BackendStackId"])["Stacks"][0]
    assert rows["Backend"] == ("AWS::CloudFormation::Stack", values["BackendStackId"])
    assert nested["StackStatus"] == "CREATE_COMPLETE"
    assert nested["Parameters"] == [{"ParameterKey": "Greeting", "ParameterValue": "Hi there"}]
    nested_rows = resources(session, values["BackendStackId"])
    assert nested_rows["ApiFunction"] == ("AWS::Lambda::Function", values["BackendFunctionName"])
    lambda_client = session.client("lambda")
    backend = lambda_client.get_function_configuration(FunctionName=values["BackendFunctionName"])
    frontend = lambda_client.get_function_configuration(FunctionName=values["FrontendFunctionName"])
    assert backend["Environment"]["Variables"] == {"GREETING": "Hi there"}
    assert frontend["Environment"]["Variables"] == {"BACKEND_FUNCTION": values["BackendFunctionName"]}


def test_websocket_application(session: boto3.Session) -> None:
    values = sam_deploy.deploy(session, TEMPLATES / "websocket-api" / "template.yaml", "chat")

    api_id = values["ApiId"]
    gateway = session.client("apigatewayv2")
    assert values["WebSocketUrl"] == f"wss://{api_id}.execute-api.us-east-1.amazonaws.com/live"
    assert sorted(route["RouteKey"] for route in gateway.get_routes(ApiId=api_id)["Items"]) == [
        "$connect",
        "$default",
        "$disconnect",
    ]
    (authorizer,) = gateway.get_authorizers(ApiId=api_id)["Items"]
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    dynamodb = session.client("dynamodb")
    assert dynamodb.describe_time_to_live(TableName=values["ConnectionsTableName"])[
        "TimeToLiveDescription"
    ] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "ExpiresAt",
    }
    role_name = values["ChatRoleArn"].split("/")[-1]
    attached = session.client("iam").list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
    assert sorted(policy["PolicyArn"] for policy in attached) == sorted(
        [values["TableAccessPolicyArn"], "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    )


# --- failures, large templates and the command line -----------------------------------------------------------------
BROKEN_APP = f"""Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.12
      Layers: [arn:aws:lambda:us-east-1:{ACCOUNT}:layer:missing:1]
"""


def write_app(directory: Path, template: str) -> Path:
    (directory / "src").mkdir(exist_ok=True)
    (directory / "src" / "app.py").write_text("def handler(event, context):\n    return event\n")
    path = directory / "template.yaml"
    path.write_text(template)
    return path


def test_failed_deploy_names_the_resource_and_the_reason(session: boto3.Session, tmp_path: Path) -> None:
    template = write_app(tmp_path, BROKEN_APP)

    with pytest.raises(PlldbError) as error:
        sam_deploy.deploy(session, template, "broken-app")

    assert error.value.message.startswith(
        "Deploying stack broken-app failed (ROLLBACK_COMPLETE): resource Fn (AWS::Lambda::Function) CREATE_FAILED: "
    )
    assert f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:missing:1" in error.value.message

    # Fixing the template and deploying again replaces the rolled-back stack.
    write_app(
        tmp_path,
        BROKEN_APP.replace(f"      Layers: [arn:aws:lambda:us-east-1:{ACCOUNT}:layer:missing:1]\n", ""),
    )
    lines: list[str] = []
    sam_deploy.deploy(session, template, "broken-app", on_event=lines.append)
    assert "Stack broken-app is ROLLBACK_COMPLETE and cannot be updated; deleting it first" in lines
    stack = session.client("cloudformation").describe_stacks(StackName="broken-app")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"


RENAMABLE_APP = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Name: {Type: String}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Ref Name
      Runtime: python3.12
      Handler: app.handler
      CodeUri: src/
      AutoPublishAlias: live
"""


def test_renaming_a_function_with_an_alias_moves_its_version_and_alias_to_the_new_function(
    session: boto3.Session, tmp_path: Path
) -> None:
    template = write_app(tmp_path, RENAMABLE_APP)
    sam_deploy.deploy(session, template, "renamed-app", parameters={"Name": "renamed-before"})

    sam_deploy.deploy(session, template, "renamed-app", parameters={"Name": "renamed-after"})

    stack = session.client("cloudformation").describe_stacks(StackName="renamed-app")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    client = session.client("lambda")
    names = {function["FunctionName"] for function in client.list_functions()["Functions"]}
    assert ("renamed-before" in names, "renamed-after" in names) == (False, True)
    assert client.get_alias(FunctionName="renamed-after", Name="live")["FunctionVersion"] == "1"
    versions = client.list_versions_by_function(FunctionName="renamed-after")["Versions"]
    assert [version["Version"] for version in versions] == ["$LATEST", "1"]


def test_invalid_sam_document_is_a_one_line_error(session: boto3.Session, tmp_path: Path) -> None:
    template = write_app(
        tmp_path, BROKEN_APP.replace("      Handler: app.handler\n", "      Events: {E: {Type: Bogus}}\n")
    )

    with pytest.raises(PlldbError) as error:
        sam_deploy.deploy(session, template, "invalid-app")

    assert error.value.message.startswith(
        "Deploying stack invalid-app failed: ValidationError: Transform AWS::Serverless-2016-10-31 failed with: "
    )


def test_large_template_is_passed_by_url(session: boto3.Session, tmp_path: Path) -> None:
    padding = "x" * 60_000
    template = write_app(
        tmp_path,
        BROKEN_APP.replace("Resources:", f"Metadata:\n  Padding: {padding}\nResources:").replace(
            f"      Layers: [arn:aws:lambda:us-east-1:{ACCOUNT}:layer:missing:1]\n", ""
        ),
    )

    sam_deploy.deploy(session, template, "large-app")

    original = session.client("cloudformation").get_template(StackName="large-app")["TemplateBody"]
    assert original["Metadata"] == {"Padding": padding}


def test_command_line_prints_the_outputs(
    session: boto3.Session,
    moto_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    status = sam_deploy.main(["--template", str(EXAMPLE / "template.yaml"), "--stack-name", "hello-sam-cli"])

    captured = capsys.readouterr()
    printed = dict(line.split("\t") for line in captured.out.splitlines())
    assert status == 0
    assert set(printed) == {
        "HelloFunctionName",
        "HelloFunctionArn",
        "GoodbyeFunctionName",
        "GoodbyeFunctionArn",
        "SharedLayerArn",
    }
    assert printed["HelloFunctionName"] == resources(session, "hello-sam-cli")["HelloFunction"][1]
    assert "CREATE_COMPLETE" in captured.err

    assert sam_deploy.main(["--template", str(EXAMPLE / "nope.yaml"), "--stack-name", "hello-sam-cli"]) == 1
    assert capsys.readouterr().err == (
        f"Error: Cannot read template {EXAMPLE / 'nope.yaml'}: No such file or directory. Check the --template path.\n"
    )


# --- what the local cloud does not emulate ------------------------------------------------------------------
EFS_APP = """Transform: AWS::Serverless-2016-10-31
Resources:
  FileSystem:
    Type: AWS::EFS::FileSystem
  AccessPoint:
    Type: AWS::EFS::AccessPoint
    Properties:
      FileSystemId: !Ref FileSystem
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: app.handler
      Runtime: python3.12
      Environment:
        Variables:
          ACCESS_POINT: !GetAtt AccessPoint.Arn
"""

GRAPHQL_APP = """Resources:
  Api:
    Type: AWS::AppSync::GraphQLApi
    Properties: {Name: orders, AuthenticationType: API_KEY}
  Queue:
    Type: AWS::SQS::Queue
"""


def stack_names(session: boto3.Session) -> set[str]:
    return {stack["StackName"] for stack in session.client("cloudformation").describe_stacks()["Stacks"]}


def test_an_attribute_the_local_cloud_cannot_resolve_refuses_the_template_and_creates_nothing(
    session: boto3.Session, tmp_path: Path
) -> None:
    template = write_app(tmp_path, EFS_APP)

    with pytest.raises(PlldbError) as error:
        sam_deploy.deploy(session, template, "efs-app")

    assert error.value.one_line() == (
        "Deploying stack efs-app failed: ValidationError: Resource AccessPoint (AWS::EFS::AccessPoint): the local "
        "cloud does not emulate its attribute Arn (Fn::GetAtt AccessPoint.Arn); docs/localcloud.md lists what it "
        "emulates."
    )
    assert "efs-app" not in stack_names(session)
    assert session.client("efs").describe_file_systems()["FileSystems"] == []


def test_a_resource_type_the_local_cloud_does_not_emulate_refuses_the_template(
    session: boto3.Session, tmp_path: Path
) -> None:
    (tmp_path / "template.yaml").write_text(GRAPHQL_APP)
    queues_before = session.client("sqs").list_queues().get("QueueUrls", [])

    with pytest.raises(PlldbError) as error:
        sam_deploy.deploy(session, tmp_path / "template.yaml", "graphql-app")

    assert error.value.one_line() == (
        "Deploying stack graphql-app failed: ValidationError: Resource Api (AWS::AppSync::GraphQLApi): the local "
        "cloud does not emulate this resource type; docs/localcloud.md lists what it emulates."
    )
    assert "graphql-app" not in stack_names(session)
    assert session.client("sqs").list_queues().get("QueueUrls", []) == queues_before


def test_an_update_the_local_cloud_cannot_deploy_leaves_the_stack_as_it_was(
    session: boto3.Session, tmp_path: Path
) -> None:
    (tmp_path / "template.yaml").write_text(
        GRAPHQL_APP.split("  Api:")[0] + "  Queue:\n    Type: AWS::SQS::Queue\n"
    )
    sam_deploy.deploy(session, tmp_path / "template.yaml", "growing-app")
    cloudformation = session.client("cloudformation")
    before = cloudformation.describe_stacks(StackName="growing-app")["Stacks"][0]
    (tmp_path / "template.yaml").write_text(GRAPHQL_APP)

    with pytest.raises(PlldbError) as error:
        sam_deploy.deploy(session, tmp_path / "template.yaml", "growing-app")

    after = cloudformation.describe_stacks(StackName="growing-app")["Stacks"][0]
    assert "Resource Api (AWS::AppSync::GraphQLApi)" in error.value.message
    assert (after["StackStatus"], after.get("LastUpdatedTime")) == (
        before["StackStatus"],
        before.get("LastUpdatedTime"),
    )
    assert set(resources(session, "growing-app")) == {"Queue"}
    assert "Api" not in cloudformation.get_template(StackName="growing-app")["TemplateBody"]["Resources"]


def test_the_documented_resource_types_are_the_ones_the_local_cloud_deploys() -> None:
    from plldb.localcloud import moto_extensions
    from plldb.localcloud.moto_extensions.support import supported_resource_types

    moto_extensions.install()
    text = (ROOT / "docs" / "localcloud.md").read_text()
    listed = text.split("<!-- resource-types:start -->")[1].split("<!-- resource-types:end -->")[0]
    documented = {
        f"AWS::{service}::{name}"
        for service, names in re.findall(r"^- (\w+): (.+)$", listed, flags=re.MULTILINE)
        for name in re.findall(r"`([^`]+)`", names)
    }

    assert documented == set(supported_resource_types())
    assert {
        "AWS::S3::BucketPolicy",
        "AWS::Lambda::Function",
        "AWS::StepFunctions::StateMachine",
    } <= documented
    assert "AWS::SNS::Subscription" not in documented
