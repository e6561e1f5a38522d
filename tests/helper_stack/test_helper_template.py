"""The helper stack's template: lint-clean, security-scan clean, and the shape the rest of plldb relies on.

The statements are read resolved for a deployment (tests/security_iam.py), so each check is about the
ARNs and values AWS would see, not about how the YAML spells them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfn_flip import load_yaml
from security_iam import Deployment

from plldb import protocol
from plldb.bootstrap import packaging
from plldb.bootstrap.helper_stack import OUTPUT_FIELDS, TEMPLATE_VERSION

BIN = Path(sys.executable).parent
TEMPLATE = packaging.TEMPLATE_PATH
HELPER_ROLES = ("PLLDBRoutesRole", "PLLDBDispatcherRole", "PLLDBManagerRole")


def _template() -> dict[str, Any]:
    return load_yaml(TEMPLATE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return Deployment(_template(), stack_name="plldb-team", account="210987654321", region="eu-west-1")


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def test_cfn_lint_reports_nothing():
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, timeout=300
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_checkov_passes_with_every_skip_justified():
    result = subprocess.run(
        [str(BIN / "checkov"), "-f", TEMPLATE.name, "--compact", "--skip-download", "--output", "json"],
        cwd=TEMPLATE.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 40
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 40, skipped["check_id"]


def test_outputs_are_exactly_what_load_helper_stack_reads_and_the_version_matches(deployment):
    outputs = _template()["Outputs"]
    assert sorted(outputs) == sorted(OUTPUT_FIELDS)
    assert outputs["TemplateVersion"]["Value"] == TEMPLATE_VERSION
    resolved = deployment.outputs()
    assert resolved["ConnectRouteArn"] == (
        f"arn:aws:execute-api:eu-west-1:210987654321:{deployment.ref('WebSocketApi')}/plldb/$connect"
    )
    assert resolved["InstrumentedFunctionPolicyArn"] == (
        "arn:aws:iam::210987654321:policy/plldb/plldb-team-instrumented-function"
    )
    assert (
        resolved["WebSocketUrl"]
        == f"wss://{deployment.ref('WebSocketApi')}.execute-api.eu-west-1.amazonaws.com/plldb"
    )


def test_tables_have_the_keys_and_ttl_the_protocol_names_and_no_index_to_query():
    resources = _template()["Resources"]
    expected = {
        "PLLDBSessions": ([(protocol.A_SESSION_ID, "HASH")], protocol.A_TTL),
        "PLLDBConnections": ([(protocol.A_CONNECTION_ID, "HASH")], protocol.A_TTL),
        "PLLDBStackLocks": ([(protocol.A_STACK_ID, "HASH")], None),  # freed by their owner or the sweep
        "PLLDBInvocations": (
            [(protocol.A_CALLER, "HASH"), (protocol.A_DELIVERY_ID, "RANGE")],
            protocol.A_TTL,
        ),
    }
    tables = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"}
    assert sorted(tables) == sorted(expected)
    for logical, (keys, ttl) in expected.items():
        properties = tables[logical]
        assert [(k["AttributeName"], k["KeyType"]) for k in properties["KeySchema"]] == keys, logical
        assert "GlobalSecondaryIndexes" not in properties and "LocalSecondaryIndexes" not in properties
        if ttl is None:
            assert "TimeToLiveSpecification" not in properties
        else:
            assert dict(properties["TimeToLiveSpecification"]) == {"AttributeName": ttl, "Enabled": True}
        assert dict(properties["SSESpecification"]) == {"SSEEnabled": True}


def test_names_derive_from_the_stack_name_only_so_several_helper_stacks_can_coexist(deployment):
    name_properties = {
        "AWS::DynamoDB::Table": "TableName",
        "AWS::IAM::Role": "RoleName",
        "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
        "AWS::Lambda::Function": "FunctionName",
        "AWS::Lambda::LayerVersion": "LayerName",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::S3::Bucket": "BucketName",
        "AWS::ApiGatewayV2::Api": "Name",
        "AWS::Events::Rule": "Name",
    }
    for logical_id, resource in _template()["Resources"].items():
        value = resource.get("Properties", {}).get(name_properties.get(resource["Type"], ""))
        if value is None:
            continue
        assert isinstance(value, dict) and list(value) == ["Fn::Sub"], (logical_id, value)
        assert set(re.findall(r"\$\{([^}]+)\}", value["Fn::Sub"])) == {"AWS::StackName"}, logical_id
    other = Deployment(_template(), stack_name="plldb-other", account="210987654321", region="eu-west-1")
    logical_ids = list(_template()["Resources"])
    assert set(map(deployment.physical_name, logical_ids)).isdisjoint(map(other.physical_name, logical_ids))


def test_connect_is_authorized_by_iam_and_no_other_authorizer_exists():
    resources = _template()["Resources"]
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    }
    assert {key: route["AuthorizationType"] for key, route in routes.items()} == {
        "$connect": "AWS_IAM",
        "$disconnect": "NONE",
        "$default": "NONE",
    }
    assert not [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Authorizer"]


def test_every_role_is_trusted_by_lambda_only_and_invoke_permissions_name_their_source(deployment):
    roles = deployment.of_type("AWS::IAM::Role")
    assert sorted(roles) == sorted(HELPER_ROLES)
    for role in roles:
        assert deployment.trust_policy(role)["Statement"] == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ], role
    permissions = {
        logical: deployment.resolve(deployment.resources[logical]["Properties"])
        for logical in deployment.of_type("AWS::Lambda::Permission")
    }
    assert permissions == {
        "SweepInvokePermission": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": deployment.get_att("ManagerFunction", "Arn"),
            "Principal": "events.amazonaws.com",
            "SourceArn": deployment.get_att("SweepRule", "Arn"),
        },
        "RoutesInvokePermission": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": deployment.get_att("RoutesFunction", "Arn"),
            "Principal": "apigateway.amazonaws.com",
            "SourceArn": f"arn:aws:execute-api:eu-west-1:210987654321:{deployment.ref('WebSocketApi')}/plldb/*",
        },
    }
    functions = {
        logical: deployment.resolve(deployment.resources[logical]["Properties"]["Role"])
        for logical in deployment.of_type("AWS::Lambda::Function")
    }
    assert functions == {
        "RoutesFunction": deployment.get_att("PLLDBRoutesRole", "Arn"),
        "DispatcherFunction": deployment.get_att("PLLDBDispatcherRole", "Arn"),
        "ManagerFunction": deployment.get_att("PLLDBManagerRole", "Arn"),
    }


def test_no_statement_grants_assume_role_wildcard_actions_or_all_of_iam(deployment):
    for owner, statement in deployment.all_statements():
        assert statement["Effect"] == "Allow", owner
        for action in _list(statement["Action"]):
            assert "*" not in action and "?" not in action, (owner, statement.get("Sid"), action)
            assert action.lower() != "sts:assumerole", (owner, statement.get("Sid"))
            assert not action.lower().startswith(("iam:create", "iam:put", "iam:pass", "iam:update")), action
        assert "NotAction" not in statement and "NotResource" not in statement


def test_the_instrumented_function_policy_grants_exactly_its_own_items_objects_and_the_dispatcher(deployment):
    invocations = deployment.get_att("PLLDBInvocations", "Arn")
    bucket = deployment.get_att("PayloadBucket", "Arn")
    from_lambda = {
        "ArnLike": {"lambda:SourceFunctionArn": "arn:aws:lambda:eu-west-1:210987654321:function:*"}
    }
    assert deployment.managed_policy("InstrumentedFunctionPolicy") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OwnInvocationItemsOnly",
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"],
                "Resource": invocations,
                "Condition": {
                    "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${aws:userid}"]},
                    **from_lambda,
                },
            },
            {
                "Sid": "OwnEventObjects",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"{bucket}/events/${{aws:userid}}/*",
                "Condition": from_lambda,
            },
            {
                "Sid": "OwnResponseObjects",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"{bucket}/responses/${{aws:userid}}/*",
                "Condition": from_lambda,
            },
            {
                "Sid": "HandInvocationsToTheDispatcher",
                "Effect": "Allow",
                "Action": "lambda:InvokeFunction",
                "Resource": deployment.get_att("DispatcherFunction", "Arn"),
                "Condition": from_lambda,
            },
        ],
    }
    assert deployment.resources["InstrumentedFunctionPolicy"]["Properties"].get("Roles") is None, (
        "attached by plldb to the roles of instrumented functions only, never by the template"
    )


def test_only_the_helper_stacks_roles_may_manage_connections(deployment):
    owners = {
        owner
        for owner, s in deployment.all_statements()
        if "execute-api:ManageConnections" in _list(s["Action"])
    }
    assert owners == set(HELPER_ROLES)
    methods = {}
    for owner, statement in deployment.all_statements():
        if "execute-api:ManageConnections" in _list(statement["Action"]):
            methods[owner] = sorted(r.split("/")[2] for r in _list(statement["Resource"]))
            for resource in _list(statement["Resource"]):
                assert resource.startswith(
                    f"arn:aws:execute-api:eu-west-1:210987654321:{deployment.ref('WebSocketApi')}/plldb/"
                )
    assert methods == {
        "PLLDBRoutesRole": ["GET", "POST"],
        "PLLDBDispatcherRole": ["POST"],
        "PLLDBManagerRole": ["GET", "POST"],
    }


def test_the_managers_iam_actions_are_conditioned_on_plldbs_policy_and_tags(deployment):
    statements = [s for owner, s in deployment.all_statements() if owner == "PLLDBManagerRole"]
    iam = {
        tuple(sorted(_list(s["Action"]))): s
        for s in statements
        if any(a.startswith("iam:") for a in _list(s["Action"]))
    }
    assert sorted(iam) == [
        ("iam:AttachRolePolicy", "iam:DetachRolePolicy"),
        ("iam:ListRoleTags",),
        ("iam:UntagRole",),
    ]
    assert iam[("iam:AttachRolePolicy", "iam:DetachRolePolicy")]["Condition"] == {
        "ArnEquals": {"iam:PolicyARN": deployment.ref("InstrumentedFunctionPolicy")}
    }
    assert iam[("iam:UntagRole",)]["Condition"] == {
        "ForAllValues:StringLike": {"aws:TagKeys": ["plldb:fn:*"]}
    }
    assert "Condition" not in iam[("iam:ListRoleTags",)]
    assert deployment.function_environment("ManagerFunction")["PLLDB_INSTRUMENTED_FUNCTION_POLICY_ARN"] == (
        deployment.ref("InstrumentedFunctionPolicy")
    )


def test_delete_function_is_granted_on_qualified_arns_only(deployment):
    deletes = [s for _, s in deployment.all_statements() if "lambda:DeleteFunction" in _list(s["Action"])]
    assert [_list(s["Resource"]) for s in deletes] == [["arn:aws:lambda:eu-west-1:210987654321:function:*:*"]]


def test_each_function_gets_the_names_of_this_stacks_resources_only(deployment):
    names = {deployment.physical_name(logical) for logical in deployment.resources} | {
        deployment.ref(logical) for logical in deployment.resources
    }
    for function in deployment.of_type("AWS::Lambda::Function"):
        environment = deployment.function_environment(function)
        for variable, value in environment.items():
            if variable.endswith(("_TABLE", "_BUCKET", "_FUNCTION")):
                assert value in names, (function, variable, value)
    assert deployment.function_environment("RoutesFunction")["PLLDB_HELPER_STACK_ID"] == deployment.stack_id
    assert deployment.function_environment("DispatcherFunction")[protocol.ENV_INVOCATIONS_TABLE] == (
        deployment.physical_name("PLLDBInvocations")
    )
