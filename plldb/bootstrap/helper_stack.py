"""The client's view of a deployed helper stack: its outputs, and synchronous calls to its manager."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from plldb.errors import PlldbError

DEFAULT_STACK_NAME = "plldb"
TEMPLATE_VERSION = "2.1"  # must equal Outputs.TemplateVersion in cloudformation/template.yaml

# Output key -> HelperStack field.
OUTPUT_FIELDS = {
    "WebSocketUrl": "websocket_url",
    "ConnectRouteArn": "connect_route_arn",
    "LayerVersionArn": "layer_version_arn",
    "DispatcherFunctionArn": "dispatcher_function_arn",
    "InvocationsTableName": "invocations_table_name",
    "PayloadBucketName": "payload_bucket_name",
    "InstrumentedFunctionPolicyArn": "instrumented_function_policy_arn",
    "ManagerFunctionName": "manager_function_name",
    "TemplateVersion": "template_version",
}

READY_STATUSES = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"}

# A restore of a large stack may take minutes: wait for the manager as long as Lambda lets it run.
MANAGER_CLIENT_CONFIG = Config(
    connect_timeout=10, read_timeout=910, retries={"mode": "standard", "max_attempts": 1}
)


@dataclass(frozen=True)
class HelperStack:
    stack_name: str
    stack_id: str
    region: str
    status: str
    websocket_url: str
    connect_route_arn: str
    layer_version_arn: str
    dispatcher_function_arn: str
    invocations_table_name: str
    payload_bucket_name: str
    instrumented_function_policy_arn: str
    manager_function_name: str
    template_version: str

    @property
    def outdated(self) -> bool:
        """Deployed by an older plldb: 'plldb bootstrap setup' brings it up to date."""
        return self.template_version != TEMPLATE_VERSION


def not_bootstrapped(stack_name: str, region: str) -> PlldbError:
    return PlldbError(
        f"The plldb helper stack {stack_name!r} was not found in {region}.",
        "Run 'plldb bootstrap setup' first.",
    )


def describe_helper_stack(
    session: boto3.Session, stack_name: str = DEFAULT_STACK_NAME
) -> dict[str, Any] | None:
    """describe_stacks of the helper stack, or None when it does not exist."""
    cloudformation = session.client("cloudformation")
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message", "")):
            return None
        raise
    return stacks[0] if stacks else None


def load_helper_stack(session: boto3.Session, stack_name: str = DEFAULT_STACK_NAME) -> HelperStack:
    """The helper stack's outputs; a clear PlldbError when it is missing or not usable."""
    region = session.region_name or "the configured region"
    stack = describe_helper_stack(session, stack_name)
    if stack is None:
        raise not_bootstrapped(stack_name, region)
    status = str(stack.get("StackStatus", ""))
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    missing = sorted(key for key in OUTPUT_FIELDS if not outputs.get(key) and key != "TemplateVersion")
    if status not in READY_STATUSES or (missing and outputs.get("TemplateVersion") == TEMPLATE_VERSION):
        raise PlldbError(
            f"The plldb helper stack {stack_name!r} in {region} is not ready (status {status}).",
            "Run 'plldb bootstrap setup' to create or repair it.",
        )
    if outputs.get("TemplateVersion") != TEMPLATE_VERSION:
        raise PlldbError(
            f"The plldb helper stack {stack_name!r} in {region} was deployed by another plldb version "
            f"(template {outputs.get('TemplateVersion') or 'unknown'}, this plldb needs {TEMPLATE_VERSION}).",
            "Run 'plldb bootstrap setup' to update it.",
        )
    values = {field: str(outputs[key]) for key, field in OUTPUT_FIELDS.items()}
    return HelperStack(
        stack_name=stack_name,
        stack_id=str(stack.get("StackId", "")),
        region=str(session.region_name),
        status=status,
        **values,
    )


def invoke_manager(session: boto3.Session, helper: HelperStack, payload: dict[str, Any]) -> dict[str, Any]:
    """Run a manager action synchronously; its failure becomes a PlldbError with the manager's message."""
    client = session.client("lambda", config=MANAGER_CLIENT_CONFIG)
    response = client.invoke(
        FunctionName=helper.manager_function_name,
        InvocationType="RequestResponse",
        Payload=json.dumps(payload).encode("utf-8"),
    )
    body = response["Payload"].read()
    try:
        result = json.loads(body or b"null")
    except ValueError:
        result = None
    if response.get("FunctionError"):
        message = result.get("errorMessage") if isinstance(result, dict) else None
        raise PlldbError(
            f"The plldb manager failed: {message or body.decode('utf-8', 'replace')[:500]}",
            f"See the manager's logs (function {helper.manager_function_name}).",
        )
    if not isinstance(result, dict):
        raise PlldbError(f"The plldb manager returned an unexpected answer: {body[:200]!r}")
    return result
