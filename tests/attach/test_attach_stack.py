"""Mapping a deployed stack tree (with nested stacks) to local functions, against moto over HTTP."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from attach_support import MotoServer

from plldb.errors import PlldbError
from plldb.local.stack import DeployedFunction, map_stack
from plldb.local.template import scan_template
from plldb.localcloud.sam_deploy import deploy

ROOT_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello/
      Handler: app.lambda_handler
      Runtime: python3.12
  App:
    Type: AWS::Serverless::Application
    Properties:
      Location: nested/template.yaml
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      BillingMode: PAY_PER_REQUEST
"""

NESTED_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  InnerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: inner/
      Handler: app.handler
      Runtime: python3.12
  NodeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: node/
      Handler: index.handler
      Runtime: nodejs20.x
"""


def make_project(root: Path) -> Path:
    for folder, name, text in [
        ("hello", "app.py", "def lambda_handler(event, context):\n    return 1\n"),
        ("nested/inner", "app.py", "def handler(event, context):\n    return 2\n"),
        ("nested/node", "index.js", "exports.handler = async () => 3;\n"),
    ]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(text)
    (root / "nested" / "template.yaml").write_text(textwrap.dedent(NESTED_TEMPLATE))
    template = root / "template.yaml"
    template.write_text(textwrap.dedent(ROOT_TEMPLATE))
    return template


def physical_id(server: MotoServer, stack: str, logical_id: str) -> str:
    resource = server.client("cloudformation").describe_stack_resource(
        StackName=stack, LogicalResourceId=logical_id
    )
    return str(resource["StackResourceDetail"]["PhysicalResourceId"])


def test_functions_of_nested_stacks_map_to_their_local_templates(
    moto_env: MotoServer, tmp_path: Path
) -> None:
    template = make_project(tmp_path)
    stack = f"mapped-{uuid.uuid4().hex[:6]}"
    deploy(moto_env.session(), template, stack)
    nested_stack = physical_id(moto_env, stack, "App")

    stack_map = map_stack(moto_env.session(), stack, template)

    by_path = {function.logical_path: function for function in stack_map.functions}
    assert set(by_path) == {"HelloFunction", "App/InnerFunction", "App/NodeFunction"}
    hello = by_path["HelloFunction"]
    assert hello == DeployedFunction(
        physical_name=physical_id(moto_env, stack, "HelloFunction"),
        logical_id="HelloFunction",
        logical_path="HelloFunction",
        stack_id=stack,
        local=scan_template(template).local["HelloFunction"],
        missing_reason=None,
    )
    assert hello.local is not None and hello.local.code_dir == (tmp_path / "hello").resolve()
    assert hello.source == "hello/app.py:lambda_handler"
    inner = by_path["App/InnerFunction"]
    assert (inner.stack_id, inner.logical_id, inner.source) == (
        nested_stack,
        "InnerFunction",
        "nested/inner/app.py:handler",
    )
    assert inner.physical_name == physical_id(moto_env, nested_stack, "InnerFunction")
    node = by_path["App/NodeFunction"]
    assert (node.local, node.source, node.missing_reason) == (None, None, "runtime nodejs20.x is not Python")

    assert stack_map.by_physical_name(inner.physical_name) is inner
    assert (
        stack_map.by_physical_name(f"arn:aws:lambda:us-east-1:123456789012:function:{hello.physical_name}")
        is hello
    )
    assert stack_map.by_physical_name("unknown") is None
    assert [f.logical_path for f in stack_map.selected(["Inner*"])] == ["App/InnerFunction"]
    assert [f.logical_path for f in stack_map.selected(["App/*"])] == [
        "App/InnerFunction",
        "App/NodeFunction",
    ]
    assert len(stack_map.selected([])) == 3


def test_missing_stack_is_one_clear_error(moto_env: MotoServer, tmp_path: Path) -> None:
    template = make_project(tmp_path)
    with pytest.raises(PlldbError) as caught:
        map_stack(moto_env.session(), "no-such-stack", template)
    assert caught.value.one_line() == (
        "Stack 'no-such-stack' was not found in region us-east-1. "
        "Check --stack-name and --region (or stack_name and region in samconfig.toml)."
    )


def test_stack_without_functions_is_one_clear_error(moto_env: MotoServer, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n",
    )
    stack = f"nofunctions-{uuid.uuid4().hex[:6]}"
    deploy(moto_env.session(), template, stack)
    with pytest.raises(PlldbError) as caught:
        map_stack(moto_env.session(), stack, template)
    assert caught.value.one_line() == (
        f"Stack {stack!r} has no Lambda functions (AWS::Lambda::Function) to debug. "
        "Attach to a stack deployed from a SAM template with AWS::Serverless::Function resources."
    )


def test_missing_template_is_one_clear_error(moto_env: MotoServer, tmp_path: Path) -> None:
    with pytest.raises(PlldbError) as caught:
        map_stack(moto_env.session(), "any", tmp_path / "template.yaml")
    assert caught.value.one_line() == (
        f"Template {tmp_path / 'template.yaml'} was not found. "
        "Run in your SAM project folder or pass --template (or set template_file in samconfig.toml)."
    )
