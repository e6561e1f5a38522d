"""moto's CloudFormation, with plldb's extensions, deploys what AWS deploys: one test per closed gap.

Every test talks to a real moto server over HTTP with boto3, exactly as product code would.
"""

from __future__ import annotations

import io
import json
import re
import urllib.request
import zipfile
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from plldb.localcloud import moto_extensions

ACCOUNT = "123456789012"
REGION = "us-east-1"
ARTIFACTS = "gap-test-artifacts"


# --- helpers ------------------------------------------------------------------------------------------------
def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload(session: boto3.Session, key: str, data: bytes) -> None:
    s3 = session.client("s3")
    try:
        s3.head_bucket(Bucket=ARTIFACTS)
    except ClientError:
        s3.create_bucket(Bucket=ARTIFACTS)
    s3.put_object(Bucket=ARTIFACTS, Key=key, Body=data)


def create(session: boto3.Session, name: str, template: str, **parameters: str) -> dict[str, Any]:
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=template,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    return dict(cloudformation.describe_stacks(StackName=name)["Stacks"][0])


def update(session: boto3.Session, name: str, template: str, **parameters: str) -> dict[str, Any]:
    cloudformation = session.client("cloudformation")
    cloudformation.update_stack(
        StackName=name,
        TemplateBody=template,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    return dict(cloudformation.describe_stacks(StackName=name)["Stacks"][0])


def outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs") or []}


def resources(session: boto3.Session, name: str) -> dict[str, tuple[str, str]]:
    summaries = session.client("cloudformation").list_stack_resources(StackName=name)[
        "StackResourceSummaries"
    ]
    return {row["LogicalResourceId"]: (row["ResourceType"], row["PhysicalResourceId"]) for row in summaries}


def resource_events(session: boto3.Session, name: str) -> list[tuple[str, str, str]]:
    """(logical id, status, reason) of the stack's events, oldest first."""
    events = session.client("cloudformation").describe_stack_events(StackName=name)["StackEvents"]
    return [
        (e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason") or "")
        for e in reversed(events)
    ]


FUNCTION_CODE = "def handler(event, context):\n    return event\n"
TRUST_LAMBDA = """
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - {Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}"""


# --- gap 1: AWS::ApiGatewayV2::* ------------------------------------------------------------------------------
WEBSOCKET_TEMPLATE = f"""
Parameters:
  IdentitySource: {{Type: String, Default: route.request.querystring.session}}
  WithDisconnect: {{Type: String, Default: "yes"}}
Conditions:
  HasDisconnect: !Equals [!Ref WithDisconnect, "yes"]
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:{TRUST_LAMBDA}
  Handler:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Code: {{ZipFile: "def handler(event, context):\\n    return {{'statusCode': 200}}\\n"}}
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      Name: gap1-websocket
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: $request.body.action
  Authorizer:
    Type: AWS::ApiGatewayV2::Authorizer
    Properties:
      ApiId: !Ref Api
      Name: session-authorizer
      AuthorizerType: REQUEST
      AuthorizerUri: !Sub "arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{Handler.Arn}}/invocations"
      IdentitySource: [!Ref IdentitySource]
  Integration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub "arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{Handler.Arn}}/invocations"
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $connect
      AuthorizationType: CUSTOM
      AuthorizerId: !Ref Authorizer
      Target: !Sub "integrations/${{Integration}}"
  DisconnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Condition: HasDisconnect
    Properties:
      ApiId: !Ref Api
      RouteKey: $disconnect
      Target: !Sub "integrations/${{Integration}}"
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $default
      Target: !Sub "integrations/${{Integration}}"
  Deployment:
    Type: AWS::ApiGatewayV2::Deployment
    DependsOn: [ConnectRoute, DefaultRoute]
    Properties:
      ApiId: !Ref Api
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      ApiId: !Ref Api
      StageName: live
      DeploymentId: !Ref Deployment
  Permission:
    Type: AWS::Lambda::Permission
    Properties:
      Action: lambda:InvokeFunction
      FunctionName: !Ref Handler
      Principal: apigateway.amazonaws.com
      SourceArn: !Sub "arn:aws:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{Api}}/*"
Outputs:
  ApiId: {{Value: !Ref Api}}
  Endpoint: {{Value: !GetAtt Api.ApiEndpoint}}
  Url: {{Value: !Sub "${{Api.ApiEndpoint}}/${{Stage}}"}}
  AuthorizerId: {{Value: !Ref Authorizer}}
  IntegrationId: {{Value: !Ref Integration}}
  ConnectRouteId: {{Value: !Ref ConnectRoute}}
  DeploymentId: {{Value: !Ref Deployment}}
  HandlerArn: {{Value: !GetAtt Handler.Arn}}
"""


def test_websocket_api_resources_are_created_with_aws_identifiers(session: boto3.Session) -> None:
    stack = create(session, "gap1-websocket", WEBSOCKET_TEMPLATE)
    values = outputs(stack)
    api_id = values["ApiId"]
    gateway = session.client("apigatewayv2")

    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert re.fullmatch(r"[a-z0-9]{8}", api_id)
    assert values["Endpoint"] == f"wss://{api_id}.execute-api.us-east-1.amazonaws.com"
    assert values["Url"] == f"wss://{api_id}.execute-api.us-east-1.amazonaws.com/live"
    api = gateway.get_api(ApiId=api_id)
    assert (api["Name"], api["ProtocolType"], api["RouteSelectionExpression"]) == (
        "gap1-websocket",
        "WEBSOCKET",
        "$request.body.action",
    )
    assert api["ApiEndpoint"] == values["Endpoint"]

    routes = {route["RouteKey"]: route for route in gateway.get_routes(ApiId=api_id)["Items"]}
    assert sorted(routes) == ["$connect", "$default", "$disconnect"]
    assert routes["$connect"]["RouteId"] == values["ConnectRouteId"]
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"
    assert routes["$connect"]["AuthorizerId"] == values["AuthorizerId"]
    assert {route["Target"] for route in routes.values()} == {f"integrations/{values['IntegrationId']}"}

    (authorizer,) = gateway.get_authorizers(ApiId=api_id)["Items"]
    invoke_uri = (
        f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{values['HandlerArn']}/invocations"
    )
    assert authorizer["AuthorizerId"] == values["AuthorizerId"]
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["IdentitySource"] == ["route.request.querystring.session"]
    assert authorizer["AuthorizerUri"] == invoke_uri
    (integration,) = gateway.get_integrations(ApiId=api_id)["Items"]
    assert (integration["IntegrationType"], integration["IntegrationUri"]) == ("AWS_PROXY", invoke_uri)
    (stage,) = gateway.get_stages(ApiId=api_id)["Items"]
    assert (stage["StageName"], stage["DeploymentId"]) == ("live", values["DeploymentId"])

    rows = resources(session, "gap1-websocket")
    assert rows["Api"] == ("AWS::ApiGatewayV2::Api", api_id)
    assert rows["Authorizer"] == ("AWS::ApiGatewayV2::Authorizer", values["AuthorizerId"])
    assert rows["Stage"] == ("AWS::ApiGatewayV2::Stage", "live")
    assert rows["Deployment"] == ("AWS::ApiGatewayV2::Deployment", values["DeploymentId"])


def test_websocket_api_update_changes_routes_and_authorizer_in_place(session: boto3.Session) -> None:
    values = outputs(create(session, "gap1-update", WEBSOCKET_TEMPLATE))
    api_id = values["ApiId"]

    stack = update(
        session,
        "gap1-update",
        WEBSOCKET_TEMPLATE,
        IdentitySource="route.request.header.Authorization",
        WithDisconnect="no",
    )

    gateway = session.client("apigatewayv2")
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(stack)["ApiId"] == api_id
    assert outputs(stack)["AuthorizerId"] == values["AuthorizerId"]
    (authorizer,) = gateway.get_authorizers(ApiId=api_id)["Items"]
    assert authorizer["IdentitySource"] == ["route.request.header.Authorization"]
    assert sorted(route["RouteKey"] for route in gateway.get_routes(ApiId=api_id)["Items"]) == [
        "$connect",
        "$default",
    ]
    assert "DisconnectRoute" not in resources(session, "gap1-update")


def test_websocket_api_is_deleted_with_its_stack(session: boto3.Session) -> None:
    api_id = outputs(create(session, "gap1-delete", WEBSOCKET_TEMPLATE))["ApiId"]

    session.client("cloudformation").delete_stack(StackName="gap1-delete")

    with pytest.raises(ClientError) as error:
        session.client("apigatewayv2").get_api(ApiId=api_id)
    assert error.value.response["Error"]["Code"] == "NotFoundException"


def test_lambda_permission_is_a_policy_statement_named_by_its_physical_id(session: boto3.Session) -> None:
    stack = create(session, "gap1-permission", WEBSOCKET_TEMPLATE)
    values = outputs(stack)
    _, statement_id = resources(session, "gap1-permission")["Permission"]

    policy = json.loads(session.client("lambda").get_policy(FunctionName=values["HandlerArn"])["Policy"])

    assert re.fullmatch(r"gap1-permission-Permission-[A-Z0-9]{12}", statement_id)
    (statement,) = policy["Statement"]
    assert statement["Sid"] == statement_id
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnLike": {"AWS:SourceArn": f"arn:aws:execute-api:us-east-1:{ACCOUNT}:{values['ApiId']}/*"}
    }


# --- gap 1: IAM managed policies and roles ---------------------------------------------------------------------
def iam_template(actions: str, with_aws_policy: bool) -> str:
    aws_policy = (
        "\n        - arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        if with_aws_policy
        else ""
    )
    return f"""
Resources:
  TablePolicy:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      Description: table access
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - {{Effect: Allow, Action: [{actions}], Resource: "*"}}
  Role:
    Type: AWS::IAM::Role
    Properties:{TRUST_LAMBDA}
      ManagedPolicyArns:
        - !Ref TablePolicy{aws_policy}
      Policies:
        - PolicyName: inline-logs
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - {{Effect: Allow, Action: logs:PutLogEvents, Resource: "*"}}
Outputs:
  PolicyArn: {{Value: !Ref TablePolicy}}
  RoleName: {{Value: !Ref Role}}
"""


def test_role_attaches_managed_policies_from_the_stack_and_from_aws(session: boto3.Session) -> None:
    values = outputs(create(session, "gap1-iam", iam_template("dynamodb:GetItem", with_aws_policy=True)))
    iam = session.client("iam")

    attached = iam.list_attached_role_policies(RoleName=values["RoleName"])["AttachedPolicies"]
    inline = iam.get_role_policy(RoleName=values["RoleName"], PolicyName="inline-logs")

    assert re.fullmatch(
        rf"arn:aws:iam::{ACCOUNT}:policy/gap1-iam-TablePolicy-[A-Z0-9]{{12}}", values["PolicyArn"]
    )
    assert sorted(policy["PolicyArn"] for policy in attached) == sorted(
        [values["PolicyArn"], "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    )
    assert inline["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}
    ]
    assert iam.get_policy(PolicyArn=values["PolicyArn"])["Policy"]["DefaultVersionId"] == "v1"


def test_managed_policy_and_role_updates_apply_in_place(session: boto3.Session) -> None:
    values = outputs(
        create(session, "gap1-iam-update", iam_template("dynamodb:GetItem", with_aws_policy=True))
    )
    iam = session.client("iam")

    stack = update(
        session, "gap1-iam-update", iam_template("dynamodb:GetItem, dynamodb:PutItem", with_aws_policy=False)
    )

    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(stack) == values
    policy = iam.get_policy(PolicyArn=values["PolicyArn"])["Policy"]
    assert policy["DefaultVersionId"] == "v2"
    document = iam.get_policy_version(PolicyArn=values["PolicyArn"], VersionId="v2")["PolicyVersion"][
        "Document"
    ]
    assert document["Statement"][0]["Action"] == ["dynamodb:GetItem", "dynamodb:PutItem"]
    attached = iam.list_attached_role_policies(RoleName=values["RoleName"])["AttachedPolicies"]
    assert [policy["PolicyArn"] for policy in attached] == [values["PolicyArn"]]


def test_managed_policy_and_role_are_deleted_with_their_stack(session: boto3.Session) -> None:
    values = outputs(
        create(session, "gap1-iam-delete", iam_template("dynamodb:GetItem", with_aws_policy=True))
    )
    iam = session.client("iam")

    session.client("cloudformation").delete_stack(StackName="gap1-iam-delete")

    with pytest.raises(ClientError) as role_error:
        iam.get_role(RoleName=values["RoleName"])
    with pytest.raises(ClientError) as policy_error:
        iam.get_policy(PolicyArn=values["PolicyArn"])
    assert role_error.value.response["Error"]["Code"] == "NoSuchEntity"
    assert policy_error.value.response["Error"]["Code"] == "NoSuchEntity"


# --- gap 2: AWS::Lambda::LayerVersion -------------------------------------------------------------------------
LAYER_TEMPLATE = f"""
Parameters:
  LayerKey: {{Type: String}}
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:{TRUST_LAMBDA}
  Layer:
    Type: AWS::Lambda::LayerVersion
    Properties:
      LayerName: gap2-shared
      Description: shared helpers
      CompatibleRuntimes: [python3.12]
      Content: {{S3Bucket: {ARTIFACTS}, S3Key: !Ref LayerKey}}
  Function:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Code: {{ZipFile: "def handler(event, context):\\n    return 1\\n"}}
      Layers: [!Ref Layer]
Outputs:
  LayerRef: {{Value: !Ref Layer}}
  LayerArn: {{Value: !GetAtt Layer.LayerVersionArn}}
  FunctionName: {{Value: !Ref Function}}
"""


def layer_versions(session: boto3.Session) -> list[str]:
    versions = session.client("lambda").list_layer_versions(LayerName="gap2-shared")["LayerVersions"]
    return sorted(version["LayerVersionArn"] for version in versions)


def test_layer_ref_is_the_layer_version_arn_and_functions_use_it(session: boto3.Session) -> None:
    upload(session, "gap2/layer-v1.zip", zip_bytes({"python/helpers.py": "VALUE = 1\n"}))
    values = outputs(create(session, "gap2-layer", LAYER_TEMPLATE, LayerKey="gap2/layer-v1.zip"))
    arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:gap2-shared:1"

    configuration = session.client("lambda").get_function_configuration(FunctionName=values["FunctionName"])

    assert layer_versions(session) == [arn]
    assert values["LayerRef"] == values["LayerArn"] == arn
    assert [layer["Arn"] for layer in configuration["Layers"]] == [arn]
    assert resources(session, "gap2-layer")["Layer"] == ("AWS::Lambda::LayerVersion", arn)

    # Update: new content publishes version 2, the function follows it, version 1 goes away.
    upload(session, "gap2/layer-v2.zip", zip_bytes({"python/helpers.py": "VALUE = 2\n"}))
    stack = update(session, "gap2-layer", LAYER_TEMPLATE, LayerKey="gap2/layer-v2.zip")
    arn2 = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:gap2-shared:2"

    configuration = session.client("lambda").get_function_configuration(FunctionName=values["FunctionName"])
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(stack)["LayerRef"] == arn2
    assert [layer["Arn"] for layer in configuration["Layers"]] == [arn2]
    assert layer_versions(session) == [arn2]

    # Delete: the layer version goes with the stack.
    session.client("cloudformation").delete_stack(StackName="gap2-layer")
    assert layer_versions(session) == []


# --- gap 3: AWS::DynamoDB::Table TimeToLiveSpecification ---------------------------------------------------------
def table_template(ttl: str, with_index: bool) -> str:
    index = (
        """
      GlobalSecondaryIndexes:
        - IndexName: Owner-index
          KeySchema: [{AttributeName: Owner, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}"""
        if with_index
        else ""
    )
    return f"""
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {{AttributeName: Id, AttributeType: S}}
        - {{AttributeName: Owner, AttributeType: S}}
      KeySchema: [{{AttributeName: Id, KeyType: HASH}}]{index}{ttl}
Outputs:
  TableName: {{Value: !Ref Table}}
"""


def test_table_time_to_live_is_applied_on_create_and_update(session: boto3.Session) -> None:
    ttl = "\n      TimeToLiveSpecification: {AttributeName: TTL, Enabled: true}"
    name = outputs(create(session, "gap3-ttl", table_template(ttl, with_index=False)))["TableName"]
    dynamodb = session.client("dynamodb")

    assert dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "TTL",
    }

    renamed = "\n      TimeToLiveSpecification: {AttributeName: ExpiresAt, Enabled: true}"
    stack = update(session, "gap3-ttl", table_template(renamed, with_index=True))
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(stack)["TableName"] == name
    assert dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "ExpiresAt",
    }
    indexes = dynamodb.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
    assert [index["IndexName"] for index in indexes] == ["Owner-index"]

    update(session, "gap3-ttl", table_template("", with_index=True))
    assert dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "DISABLED"
    }


# --- gap 4: the SAM transform -------------------------------------------------------------------------------------
SAM_TEMPLATE = """AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Message: {Type: String, Default: hello}
Globals:
  Function:
    Runtime: python3.12
    Timeout: 7
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: index.handler
      InlineCode: !Sub "def handler(event, context):\\n    return '${Message}'\\n"
      Environment:
        Variables:
          MESSAGE: !Ref Message
Outputs:
  FunctionName: {Value: !Ref HelloFunction}
  FunctionArn: {Value: !GetAtt HelloFunction.Arn}
  RoleArn: {Value: !GetAtt HelloFunctionRole.Arn}
"""


def test_sam_template_is_transformed_and_both_template_stages_are_kept(session: boto3.Session) -> None:
    stack = create(session, "gap4-sam", SAM_TEMPLATE)
    cloudformation = session.client("cloudformation")

    original = cloudformation.get_template(StackName="gap4-sam", TemplateStage="Original")
    processed = cloudformation.get_template(StackName="gap4-sam", TemplateStage="Processed")

    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert original["TemplateBody"] == SAM_TEMPLATE
    assert original["StagesAvailable"] == ["Original", "Processed"]
    body = processed["TemplateBody"]
    assert "Transform" not in body
    assert {key: value["Type"] for key, value in body["Resources"].items()} == {
        "HelloFunction": "AWS::Lambda::Function",
        "HelloFunctionRole": "AWS::IAM::Role",
    }
    assert body["Resources"]["HelloFunction"]["Properties"]["Timeout"] == 7
    assert body["Resources"]["HelloFunctionRole"]["Properties"]["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]


def test_sam_functions_are_listed_with_generated_physical_names(session: boto3.Session) -> None:
    values = outputs(create(session, "gap4-names", SAM_TEMPLATE))
    cloudformation = session.client("cloudformation")

    rows = resources(session, "gap4-names")
    described = cloudformation.describe_stack_resources(
        StackName="gap4-names", LogicalResourceId="HelloFunction"
    )

    function_type, function_name = rows["HelloFunction"]
    assert function_type == "AWS::Lambda::Function"
    assert re.fullmatch(r"gap4-names-HelloFunction-[A-Z0-9]{12}", function_name)
    assert re.fullmatch(r"gap4-names-HelloFunctionRole-[A-Z0-9]{12}", rows["HelloFunctionRole"][1])
    assert [r["PhysicalResourceId"] for r in described["StackResources"]] == [function_name]
    assert values["FunctionName"] == function_name
    assert values["FunctionArn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function_name}"
    configuration = session.client("lambda").get_function_configuration(FunctionName=function_name)
    assert (
        configuration["Runtime"],
        configuration["Timeout"],
        configuration["Environment"]["Variables"],
    ) == (
        "python3.12",
        7,
        {"MESSAGE": "hello"},
    )


def test_sam_transform_is_applied_on_update(session: boto3.Session) -> None:
    values = outputs(create(session, "gap4-update", SAM_TEMPLATE))
    lambda_client = session.client("lambda")
    before = lambda_client.get_function_configuration(FunctionName=values["FunctionName"])

    stack = update(session, "gap4-update", SAM_TEMPLATE, Message="bonjour")

    after = lambda_client.get_function_configuration(FunctionName=values["FunctionName"])
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(stack) == values
    assert after["Environment"]["Variables"] == {"MESSAGE": "bonjour"}
    assert after["CodeSha256"] != before["CodeSha256"]


def test_sam_transform_is_applied_through_change_sets(session: boto3.Session) -> None:
    cloudformation = session.client("cloudformation")
    created = cloudformation.create_change_set(
        StackName="gap4-changeset",
        ChangeSetName="create",
        ChangeSetType="CREATE",
        TemplateBody=SAM_TEMPLATE,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    changes = cloudformation.describe_change_set(ChangeSetName=created["Id"])["Changes"]
    assert sorted(c["ResourceChange"]["LogicalResourceId"] for c in changes) == [
        "HelloFunction",
        "HelloFunctionRole",
    ]

    cloudformation.execute_change_set(ChangeSetName=created["Id"])

    stack = cloudformation.describe_stacks(StackName="gap4-changeset")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    function_name = outputs(stack)["FunctionName"]
    assert resources(session, "gap4-changeset")["HelloFunction"] == ("AWS::Lambda::Function", function_name)
    processed = cloudformation.get_template(StackName="gap4-changeset", TemplateStage="Processed")[
        "TemplateBody"
    ]
    assert processed["Resources"]["HelloFunction"]["Type"] == "AWS::Lambda::Function"

    updated = cloudformation.create_change_set(
        StackName="gap4-changeset",
        ChangeSetName="update",
        ChangeSetType="UPDATE",
        TemplateBody=SAM_TEMPLATE,
        Parameters=[{"ParameterKey": "Message", "ParameterValue": "hola"}],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    cloudformation.execute_change_set(ChangeSetName=updated["Id"])

    stack = cloudformation.describe_stacks(StackName="gap4-changeset")["Stacks"][0]
    configuration = session.client("lambda").get_function_configuration(FunctionName=function_name)
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(stack)["FunctionName"] == function_name
    assert configuration["Environment"]["Variables"] == {"MESSAGE": "hola"}


def test_invalid_sam_template_is_refused_with_the_transform_error(session: boto3.Session) -> None:
    broken = SAM_TEMPLATE.replace(
        "      InlineCode:", "      Events: {Nope: {Type: Unknown}}\n      InlineCode:"
    )

    with pytest.raises(ClientError) as error:
        create(session, "gap4-invalid", broken)

    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert error.value.response["Error"]["Message"].startswith(
        "Transform AWS::Serverless-2016-10-31 failed with: Invalid Serverless Application Specification document. "
        "Number of errors found: 1. Resource with id [HelloFunction] is invalid. Event with id [Nope] is invalid."
    )


# --- failures and lifecycle --------------------------------------------------------------------------------------
FAILING_TEMPLATE = f"""
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:{TRUST_LAMBDA}
  Function:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Code: {{ZipFile: "x = 1"}}
      Layers: [arn:aws:lambda:us-east-1:{ACCOUNT}:layer:does-not-exist:3]
"""


def test_failed_resource_rolls_the_creation_back_and_is_named_in_the_events(session: boto3.Session) -> None:
    stack = create(session, "failing-create", FAILING_TEMPLATE)

    events = resource_events(session, "failing-create")
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE"
    assert "Outputs" not in stack
    failed = [event for event in events if event[1] == "CREATE_FAILED"]
    assert [event[0] for event in failed] == ["Function"]
    assert "does-not-exist:3" in failed[0][2]
    assert events[-1] == ("failing-create", "ROLLBACK_COMPLETE", "")
    assert ("Role", "DELETE_COMPLETE", "") in events
    assert resources(session, "failing-create") == {}


def test_failed_update_rolls_back_to_the_previous_configuration(session: boto3.Session) -> None:
    working = FAILING_TEMPLATE.replace(
        f"      Layers: [arn:aws:lambda:us-east-1:{ACCOUNT}:layer:does-not-exist:3]\n", "      Timeout: 9\n"
    )
    working += "Outputs:\n  FunctionName: {Value: !Ref Function}\n"
    name = outputs(create(session, "failing-update", working))["FunctionName"]
    broken = working.replace(
        "      Timeout: 9\n",
        f"      Timeout: 20\n      Layers: [arn:aws:lambda:us-east-1:{ACCOUNT}:layer:nope:1]\n",
    )

    stack = update(session, "failing-update", broken)

    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    assert ("Function", "UPDATE_FAILED") in [
        (event[0], event[1]) for event in resource_events(session, "failing-update")
    ]
    assert session.client("lambda").get_function_configuration(FunctionName=name)["Timeout"] == 9
    assert outputs(stack) == {"FunctionName": name}


def test_template_with_unresolved_reference_is_refused(session: boto3.Session) -> None:
    template = FAILING_TEMPLATE.replace("Role: !GetAtt Role.Arn", "Role: !GetAtt MissingRole.Arn")

    with pytest.raises(ClientError) as error:
        create(session, "unresolved", template)

    assert error.value.response["Error"]["Message"] == (
        "Template format error: Unresolved resource dependencies [MissingRole] in the Resources block of the template"
    )


def test_update_without_changes_is_refused_as_on_aws(session: boto3.Session) -> None:
    create(session, "no-op-update", SAM_TEMPLATE)

    with pytest.raises(ClientError) as error:
        update(session, "no-op-update", SAM_TEMPLATE)

    assert error.value.response["Error"]["Message"] == "No updates are to be performed."


def test_every_resource_reports_its_own_events(session: boto3.Session) -> None:
    create(session, "resource-events", SAM_TEMPLATE)

    assert resource_events(session, "resource-events") == [
        ("resource-events", "CREATE_IN_PROGRESS", "User Initiated"),
        ("HelloFunctionRole", "CREATE_IN_PROGRESS", ""),
        ("HelloFunctionRole", "CREATE_COMPLETE", ""),
        ("HelloFunction", "CREATE_IN_PROGRESS", ""),
        ("HelloFunction", "CREATE_COMPLETE", ""),
        ("resource-events", "CREATE_COMPLETE", ""),
    ]


def test_generated_names_respect_the_lambda_and_iam_length_limits(session: boto3.Session) -> None:
    stack_name = "a-rather-long-stack-name-for-a-serverless-application-x"
    create(session, stack_name, SAM_TEMPLATE)

    rows = resources(session, stack_name)

    for logical_id in ("HelloFunction", "HelloFunctionRole"):
        name = rows[logical_id][1]
        assert len(name) <= 64
        assert re.fullmatch(rf"{stack_name[:30]}[a-z-]*-{logical_id}-[A-Z0-9]{{12}}", name)


# --- nested stacks (AWS::Serverless::Application becomes AWS::CloudFormation::Stack) -------------------------------
CHILD_TEMPLATE = """
Parameters:
  Suffix: {Type: String}
Resources:
  Queue:
    Type: AWS::SQS::Queue
Outputs:
  Greeting: {Value: !Sub "hello-${Suffix}"}
  QueueArn: {Value: !GetAtt Queue.Arn}
"""
PARENT_TEMPLATE = f"""
Parameters:
  Suffix: {{Type: String, Default: one}}
Resources:
  Child:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: https://s3.us-east-1.amazonaws.com/{ARTIFACTS}/nested/child.yaml
      Parameters:
        Suffix: !Ref Suffix
Outputs:
  ChildId: {{Value: !Ref Child}}
  ChildGreeting: {{Value: !GetAtt Child.Outputs.Greeting}}
"""


def test_nested_stack_is_a_resource_identified_by_its_stack_arn(session: boto3.Session) -> None:
    upload(session, "nested/child.yaml", CHILD_TEMPLATE.encode())
    cloudformation = session.client("cloudformation")

    values = outputs(create(session, "nested-parent", PARENT_TEMPLATE))

    child_type, child_id = resources(session, "nested-parent")["Child"]
    child = cloudformation.describe_stacks(StackName=child_id)["Stacks"][0]
    parent = cloudformation.describe_stacks(StackName="nested-parent")["Stacks"][0]
    assert child_type == "AWS::CloudFormation::Stack"
    assert child["StackId"] == child_id == values["ChildId"]
    assert re.fullmatch(r"nested-parent-Child-[A-Z0-9]{12}", child["StackName"])
    assert child["ParentId"] == child["RootId"] == parent["StackId"]
    assert values["ChildGreeting"] == "hello-one"

    # The nested stack is updated in place: same stack, same queue, new output.
    queue_arn = outputs(child)["QueueArn"]
    stack = update(session, "nested-parent", PARENT_TEMPLATE, Suffix="two")
    child = cloudformation.describe_stacks(StackName=child_id)["Stacks"][0]
    assert outputs(stack) == {"ChildId": child_id, "ChildGreeting": "hello-two"}
    assert child["StackStatus"] == "UPDATE_COMPLETE"
    assert outputs(child)["QueueArn"] == queue_arn

    cloudformation.delete_stack(StackName="nested-parent")
    child = cloudformation.describe_stacks(StackName=child_id)["Stacks"][0]
    assert child["StackStatus"] == "DELETE_COMPLETE"


def test_install_is_idempotent() -> None:
    moto_extensions.install()
    moto_extensions.install()

    from moto.cloudformation import parsing

    assert parsing.get_model_map()["AWS::ApiGatewayV2::Api"] is moto_extensions.GatewayApi


def test_change_set_without_changes_fails_instead_of_raising(session: boto3.Session) -> None:
    create(session, "no-op-change-set", SAM_TEMPLATE)
    cloudformation = session.client("cloudformation")

    change_set = cloudformation.create_change_set(
        StackName="no-op-change-set", ChangeSetName="same", ChangeSetType="UPDATE", TemplateBody=SAM_TEMPLATE
    )

    described = cloudformation.describe_change_set(ChangeSetName=change_set["Id"])
    assert (described["Status"], described["ExecutionStatus"]) == ("FAILED", "UNAVAILABLE")
    assert described["StatusReason"] == (
        "The submitted information didn't contain changes. Submit different information to create a change set."
    )


# --- gap 6: SAM's implicit REST API (a RestApi with a Swagger Body and no Name) --------------------------------------
def rest_api_template(paths: str, deployment: str) -> str:
    return f"""
Resources:
  Api:
    Type: AWS::ApiGateway::RestApi
    Properties:
      Body:
        swagger: "2.0"
        info: {{title: !Ref AWS::StackName, version: "1.0"}}
        paths:{paths}
  {deployment}:
    Type: AWS::ApiGateway::Deployment
    Properties:
      RestApiId: !Ref Api
      StageName: Stage
  ProdStage:
    Type: AWS::ApiGateway::Stage
    Properties:
      RestApiId: !Ref Api
      StageName: Prod
      DeploymentId: !Ref {deployment}
Outputs:
  Url: {{Value: !Sub "https://${{Api}}.execute-api.${{AWS::Region}}.amazonaws.com/${{ProdStage}}/"}}
  DeploymentId: {{Value: !Ref {deployment}}}
"""


ITEMS_PATH = """
          /items:
            get:
              x-amazon-apigateway-integration: {type: aws_proxy, httpMethod: POST, uri: arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:f/invocations}
              responses: {}"""
ANY_PATH = """
          /health:
            x-amazon-apigateway-any-method:
              x-amazon-apigateway-integration: {type: aws_proxy, httpMethod: POST, uri: arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:f/invocations}
              responses: {}"""


def test_rest_api_named_by_its_swagger_body_deploys_updates_and_deletes(session: boto3.Session) -> None:
    stack = create(session, "gap6-rest", rest_api_template(ITEMS_PATH, "DeploymentA"))
    api_id = resources(session, "gap6-rest")["Api"][1]
    apigateway = session.client("apigateway")

    def paths() -> dict[str, list[str]]:
        items = apigateway.get_resources(restApiId=api_id)["items"]
        return {item["path"]: sorted(item.get("resourceMethods", {})) for item in items}

    def stages() -> dict[str, str]:
        return {s["stageName"]: s["deploymentId"] for s in apigateway.get_stages(restApiId=api_id)["item"]}

    first_deployment = outputs(stack)["DeploymentId"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert apigateway.get_rest_api(restApiId=api_id)["name"] == "gap6-rest"
    assert outputs(stack)["Url"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com/Prod/"
    assert paths() == {"/": [], "/items": ["GET"]}
    assert stages() == {"Stage": first_deployment, "Prod": first_deployment}

    # SAM renames the deployment whenever the Body changes: a new one is created, the old one removed.
    stack = update(session, "gap6-rest", rest_api_template(ITEMS_PATH + ANY_PATH, "DeploymentB"))
    second_deployment = outputs(stack)["DeploymentId"]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert second_deployment != first_deployment
    assert paths() == {"/": [], "/health": ["ANY"], "/items": ["GET"]}
    assert stages() == {"Stage": second_deployment, "Prod": second_deployment}
    deployments = apigateway.get_deployments(restApiId=api_id)["items"]
    assert [deployment["id"] for deployment in deployments] == [second_deployment]

    session.client("cloudformation").delete_stack(StackName="gap6-rest")
    with pytest.raises(ClientError) as error:
        apigateway.get_rest_api(restApiId=api_id)
    assert error.value.response["Error"]["Code"] == "NotFoundException"


def test_conditional_writes_are_atomic_under_concurrency(session: Any) -> None:
    """Eight racing conditional puts of one key: exactly one wins, every time."""
    from concurrent.futures import ThreadPoolExecutor

    dynamodb = session.client("dynamodb")
    dynamodb.create_table(
        TableName="race",
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    def claim(round_number: int, writer: int) -> bool:
        try:
            dynamodb.put_item(
                TableName="race",
                Item={"Id": {"S": f"round-{round_number}"}, "Writer": {"N": str(writer)}},
                ConditionExpression="attribute_not_exists(Id)",
            )
            return True
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return False

    with ThreadPoolExecutor(8) as pool:
        for round_number in range(25):
            wins = list(pool.map(lambda writer, r=round_number: claim(r, writer), range(8)))
            assert wins.count(True) == 1


def test_every_update_takes_a_new_revision_and_a_stale_revision_is_refused(session: boto3.Session) -> None:
    iam = session.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName="revision-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    client = session.client("lambda")
    client.create_function(
        FunctionName="revisions",
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": zip_bytes({"app.py": "def handler(event, context):\n    return 1\n"})},
    )
    created = client.get_function_configuration(FunctionName="revisions")["RevisionId"]

    configured = client.update_function_configuration(FunctionName="revisions", Timeout=5, RevisionId=created)
    coded = client.update_function_code(
        FunctionName="revisions",
        ZipFile=zip_bytes({"app.py": "def handler(event, context):\n    return 2\n"}),
    )
    with pytest.raises(ClientError) as refused:
        client.update_function_configuration(
            FunctionName="revisions", Timeout=9, RevisionId=configured["RevisionId"]
        )

    assert len({created, configured["RevisionId"], coded["RevisionId"]}) == 3
    assert client.get_function_configuration(FunctionName="revisions")["RevisionId"] == coded["RevisionId"]
    assert refused.value.response["Error"]["Code"] == "PreconditionFailedException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_function_configuration(FunctionName="revisions")["Timeout"] == 5


# --- AWS::S3::BucketPolicy ----------------------------------------------------------------------------------
BUCKET_POLICY_TEMPLATE = """
Parameters:
  Target: {Type: String, Default: first}
  Sid: {Type: String, Default: TlsOnly}
Conditions:
  OnFirst: !Equals [!Ref Target, first]
Resources:
  First:
    Type: AWS::S3::Bucket
    DeletionPolicy: Retain
    Properties: {BucketName: policy-first}
  Second:
    Type: AWS::S3::Bucket
    DeletionPolicy: Retain
    Properties: {BucketName: policy-second}
  Policy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !If [OnFirst, !Ref First, !Ref Second]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Sid: !Ref Sid
            Effect: Deny
            Principal: "*"
            Action: "s3:*"
            Resource: !Sub "arn:${AWS::Partition}:s3:::${First}/*"
            Condition: {Bool: {aws:SecureTransport: "false"}}
Outputs:
  PolicyRef: {Value: !Ref Policy}
"""


def bucket_policy(session: boto3.Session, bucket: str) -> dict[str, Any] | str:
    """The bucket's policy document, or the error code S3 answers when it has none."""
    try:
        return dict(json.loads(session.client("s3").get_bucket_policy(Bucket=bucket)["Policy"]))
    except ClientError as error:
        return str(error.response["Error"]["Code"])


def policy_sids(session: boto3.Session, bucket: str) -> list[str] | str:
    policy = bucket_policy(session, bucket)
    return policy if isinstance(policy, str) else [statement["Sid"] for statement in policy["Statement"]]


def test_bucket_policy_is_created_updated_in_place_replaced_and_deleted_with_its_stack(
    session: boto3.Session,
) -> None:
    created = create(session, "bucket-policy", BUCKET_POLICY_TEMPLATE)
    created_id = resources(session, "bucket-policy")["Policy"]
    policy = bucket_policy(session, "policy-first")

    updated = update(session, "bucket-policy", BUCKET_POLICY_TEMPLATE, Sid="Renamed")
    updated_id = resources(session, "bucket-policy")["Policy"]
    after_update = (policy_sids(session, "policy-first"), policy_sids(session, "policy-second"))

    moved = update(session, "bucket-policy", BUCKET_POLICY_TEMPLATE, Sid="Renamed", Target="second")
    moved_id = resources(session, "bucket-policy")["Policy"]
    after_move = (policy_sids(session, "policy-first"), policy_sids(session, "policy-second"))

    session.client("cloudformation").delete_stack(StackName="bucket-policy")

    assert created["StackStatus"] == "CREATE_COMPLETE"
    assert created_id[0] == "AWS::S3::BucketPolicy"
    assert created_id[1].startswith("bucket-policy-Policy-")
    assert outputs(created) == {"PolicyRef": created_id[1]}
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": "arn:aws:s3:::policy-first/*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    # PolicyDocument: "Update requires: No interruption" (same resource).
    assert (updated["StackStatus"], updated_id) == ("UPDATE_COMPLETE", created_id)
    assert after_update == (["Renamed"], "NoSuchBucketPolicy")
    # Bucket: "Update requires: Replacement" (a new resource on the new bucket, the old one deleted).
    assert moved["StackStatus"] == "UPDATE_COMPLETE"
    assert moved_id != created_id
    assert after_move == ("NoSuchBucketPolicy", ["Renamed"])
    # Deleted with its stack; the retained buckets stay, without it.
    assert (policy_sids(session, "policy-first"), policy_sids(session, "policy-second")) == (
        "NoSuchBucketPolicy",
        "NoSuchBucketPolicy",
    )


def test_a_bucket_policy_decides_no_request(session: boto3.Session) -> None:
    """IAM is not enforced: moto denied every request to a bucket whose Deny statement's condition did
    not hold (aws:SecureTransport "false"), which would have cut the helper stack off its payload bucket."""
    s3 = session.client("s3")
    s3.create_bucket(Bucket="requests-first")
    tls_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": ["arn:aws:s3:::requests-first", "arn:aws:s3:::requests-first/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    s3.put_bucket_policy(Bucket="requests-first", Policy=json.dumps(tls_only))

    s3.put_object(Bucket="requests-first", Key="events/one", Body=b"payload")
    body = s3.get_object(Bucket="requests-first", Key="events/one")["Body"].read()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "requests-first", "Key": "events/one"})
    with urllib.request.urlopen(url) as response:
        presigned = response.read()

    assert bucket_policy(session, "requests-first") == tls_only
    assert (body, presigned) == (b"payload", b"payload")


# --- AWS::Lambda::Function LoggingConfig --------------------------------------------------------------------
LOGGING_TEMPLATE = f"""
Parameters:
  Format: {{Type: String, Default: Text}}
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:{TRUST_LAMBDA}
  Group:
    Type: AWS::Logs::LogGroup
    Properties: {{RetentionInDays: 14}}
  Function:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Code: {{ZipFile: "def handler(event, context):\\n    return 1\\n"}}
      LoggingConfig:
        LogGroup: !Ref Group
        LogFormat: !Ref Format
Outputs:
  FunctionName: {{Value: !Ref Function}}
  GroupName: {{Value: !Ref Group}}
"""


def test_function_logging_config_is_created_and_updated_with_its_stack(session: boto3.Session) -> None:
    values = outputs(create(session, "logging-config", LOGGING_TEMPLATE))
    created = session.client("lambda").get_function_configuration(FunctionName=values["FunctionName"])
    update(session, "logging-config", LOGGING_TEMPLATE, Format="JSON")
    updated = session.client("lambda").get_function_configuration(FunctionName=values["FunctionName"])

    assert values["GroupName"].startswith("logging-config-Group-")
    assert created["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": values["GroupName"]}
    assert updated["LoggingConfig"] == {
        "LogFormat": "JSON",
        "LogGroup": values["GroupName"],
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
    }
