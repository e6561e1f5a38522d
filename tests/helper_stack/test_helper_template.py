"""The helper stack's template: lint-clean, security-scan clean, and the shape other code relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cfn_flip import load_yaml

from plldb import protocol
from plldb.bootstrap import packaging
from plldb.bootstrap.helper_stack import OUTPUT_FIELDS, TEMPLATE_VERSION

BIN = Path(sys.executable).parent
TEMPLATE = packaging.TEMPLATE_PATH


def _template() -> dict:
    return load_yaml(TEMPLATE.read_text(encoding="utf-8"))


def test_cfn_lint_reports_nothing():
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_checkov_passes_with_every_skip_justified():
    result = subprocess.run(
        [str(BIN / "checkov"), "-f", TEMPLATE.name, "--compact", "--skip-download", "--output", "json"],
        cwd=TEMPLATE.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["failed"] == 0, [c["check_id"] for c in report["results"]["failed_checks"]]
    assert summary["passed"] > 40
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 40, skipped["check_id"]


def test_outputs_are_exactly_what_load_helper_stack_reads_and_the_version_matches():
    outputs = _template()["Outputs"]
    assert sorted(outputs) == sorted(OUTPUT_FIELDS)
    assert outputs["TemplateVersion"]["Value"] == TEMPLATE_VERSION


def test_tables_have_the_keys_indexes_and_ttl_the_protocol_names():
    resources = _template()["Resources"]
    sessions = resources["PLLDBSessions"]["Properties"]
    assert [k["AttributeName"] for k in sessions["KeySchema"]] == [protocol.A_SESSION_ID]
    assert {
        i["IndexName"]: i["KeySchema"][0]["AttributeName"] for i in sessions["GlobalSecondaryIndexes"]
    } == {
        protocol.STACK_INDEX: protocol.A_STACK_NAME,
        protocol.CONNECTION_INDEX: protocol.A_CONNECTION_ID,
    }
    debugger = resources["PLLDBDebugger"]["Properties"]
    assert [k["AttributeName"] for k in debugger["KeySchema"]] == [protocol.A_REQUEST_ID]
    for table in (sessions, debugger):
        assert dict(table["TimeToLiveSpecification"]) == {"AttributeName": protocol.A_TTL, "Enabled": True}
    instrumentation = resources["PLLDBInstrumentation"]["Properties"]
    assert [k["AttributeName"] for k in instrumentation["KeySchema"]] == ["ResourceArn"]
    assert "TimeToLiveSpecification" not in instrumentation, "the saved originals must never expire"


def test_no_fixed_physical_names_so_several_helper_stacks_can_coexist():
    name_properties = {
        "AWS::DynamoDB::Table": "TableName",
        "AWS::IAM::Role": "RoleName",
        "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
        "AWS::Lambda::Function": "FunctionName",
        "AWS::Logs::LogGroup": "LogGroupName",
    }
    for logical_id, resource in _template()["Resources"].items():
        assert name_properties.get(resource["Type"]) not in resource.get("Properties", {}), logical_id


def test_the_manager_may_attach_and_detach_only_the_instrumented_function_policy():
    statements = _template()["Resources"]["PLLDBManagerRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    iam_statements = [s for s in statements if any(str(a).startswith("iam:") for a in _list(s["Action"]))]
    for statement in iam_statements:
        actions = set(_list(statement["Action"]))
        if actions & {"iam:AttachRolePolicy", "iam:DetachRolePolicy"}:
            assert dict(statement["Condition"]["ArnEquals"]) == {
                "iam:PolicyARN": {"Ref": "InstrumentedFunctionPolicy"}
            }
        else:
            assert actions == {"iam:ListAttachedRolePolicies"}
    for statement in statements:
        assert not any(str(a) in ("*", "iam:*") or str(a).endswith(":*") for a in _list(statement["Action"]))


def test_the_debugger_role_trusts_its_own_account_and_the_policy_lets_functions_assume_only_it():
    resources = _template()["Resources"]
    trust = resources["PLLDBDebuggerRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [dict(s["Principal"]) for s in trust] == [
        {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    ]
    policy = resources["InstrumentedFunctionPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [(s["Action"], dict(s["Resource"])) for s in policy] == [
        ("sts:AssumeRole", {"Fn::GetAtt": ["PLLDBDebuggerRole", "Arn"]})
    ]


def test_the_connect_route_uses_the_request_authorizer_on_the_session_id():
    resources = _template()["Resources"]
    authorizer = resources["SessionAuthorizer"]["Properties"]
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert list(authorizer["IdentitySource"]) == ["route.request.querystring.sessionId"]
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    }
    assert sorted(routes) == ["$connect", "$default", "$disconnect"]
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"


def _list(value) -> list:
    return list(value) if isinstance(value, list) else [value]
