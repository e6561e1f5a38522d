"""Reading the local cloud's state as an end-to-end test checks it: the helper stack's tables and logs,
and everything plldb may change on a function (its configuration, its aliases and versions, its role).

Everything here reads through the same public APIs a person would use on AWS (DynamoDB scans,
CloudWatch Logs, Lambda and IAM reads); nothing looks inside the local cloud's process.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack

T = TypeVar("T")

# Fields Lambda itself changes on every update; everything else must come back exactly.
VOLATILE_FIELDS = {
    "ResponseMetadata",
    "LastModified",
    "RevisionId",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
}
HELPER_TABLES = ("PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks", "PLLDBInvocations")
LIVENESS_TIMEOUT = 120.0  # only ever fails a stuck test; never a bound on how long something takes


def wait_for(check: Callable[[], T | None], what: str, timeout: float = LIVENESS_TIMEOUT) -> T:
    """Poll ``check`` until it returns something truthy, and return that (a liveness wait only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.1)


@contextlib.contextmanager
def pointed_at(variables: dict[str, str]) -> Iterator[None]:
    """This process's AWS settings are ``variables`` meanwhile (no profile or session token of the developer's)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        yield


def helper_resource(local_cloud: Any, helper: HelperStack, logical_id: str) -> str:
    """The physical id of one of the helper stack's resources (its tables are not outputs)."""
    return str(
        local_cloud.client("cloudformation").describe_stack_resource(
            StackName=helper.stack_id, LogicalResourceId=logical_id
        )["StackResourceDetail"]["PhysicalResourceId"]
    )


def stack_id_of(local_cloud: Any, stack_name: str) -> str:
    return str(
        local_cloud.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]["StackId"]
    )


# --- The helper stack's tables ------------------------------------------------------------------------------
def table_items(local_cloud: Any, helper: HelperStack, logical_id: str) -> list[dict[str, Any]]:
    table = local_cloud.session().resource("dynamodb").Table(helper_resource(local_cloud, helper, logical_id))
    items: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"ConsistentRead": True}
    while True:
        page = table.scan(**arguments)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def helper_tables(local_cloud: Any, helper: HelperStack) -> dict[str, list[str]]:
    """Every item of the helper stack's tables, canonically: to show that something changed nothing."""
    return {
        logical_id: sorted(
            json.dumps(item, sort_keys=True, default=str)
            for item in table_items(local_cloud, helper, logical_id)
        )
        for logical_id in HELPER_TABLES
    }


def session_item(local_cloud: Any, helper: HelperStack, session_id: str) -> dict[str, Any] | None:
    for item in table_items(local_cloud, helper, "PLLDBSessions"):
        if item[protocol.A_SESSION_ID] == session_id:
            return item
    return None


def sessions_of(local_cloud: Any, helper: HelperStack, stack_name: str) -> list[dict[str, Any]]:
    """The sessions opened on ``stack_name``, oldest first."""
    items = [
        item
        for item in table_items(local_cloud, helper, "PLLDBSessions")
        if item.get(protocol.A_STACK_NAME) == stack_name
    ]
    return sorted(items, key=lambda item: int(item[protocol.A_CREATED_AT]))


def live_sessions(local_cloud: Any, helper: HelperStack, stack_name: str) -> list[dict[str, Any]]:
    return [
        item
        for item in sessions_of(local_cloud, helper, stack_name)
        if item[protocol.A_STATUS] != protocol.STATUS_CLOSED
    ]


def session_connection(local_cloud: Any, helper: HelperStack, stack_name: str) -> str | None:
    """The connection of the stack's one ACTIVE session."""
    active = [
        s
        for s in sessions_of(local_cloud, helper, stack_name)
        if s[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    ]
    return str(active[0][protocol.A_CONNECTION_ID]) if len(active) == 1 else None


def locks(local_cloud: Any, helper: HelperStack) -> dict[str, str]:
    """StackId -> the session holding it."""
    return {
        str(item[protocol.A_STACK_ID]): str(item[protocol.A_SESSION_ID])
        for item in table_items(local_cloud, helper, "PLLDBStackLocks")
    }


# --- The helper stack's logs ------------------------------------------------------------------------------
def log_group_of(local_cloud: Any, function_name: str) -> str:
    """Where Lambda sends a function's logs: its LoggingConfig's group, else /aws/lambda/{name}."""
    config = local_cloud.client("lambda").get_function_configuration(FunctionName=function_name)
    return str((config.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{config['FunctionName']}")


def log_records(local_cloud: Any, function_name: str) -> list[dict[str, Any]]:
    """The JSON log records a function wrote to CloudWatch Logs (other lines are skipped), in the order
    they were logged (each environment writes its own stream; records carry their time)."""
    logs = local_cloud.client("logs")
    group = log_group_of(local_cloud, function_name)
    records: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"logGroupName": group, "interleaved": True}
    try:
        while True:
            page = logs.filter_log_events(**arguments)
            for event in page.get("events", []):
                try:
                    record = json.loads(event["message"])
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
            if not page.get("nextToken"):
                return sorted(records, key=lambda record: str(record.get("time") or ""))
            arguments["nextToken"] = page["nextToken"]
    except logs.exceptions.ResourceNotFoundException:
        return []


def new_records(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of ``after`` that ``before`` did not have (whatever their order)."""
    seen = [json.dumps(record, sort_keys=True) for record in before]
    fresh = []
    for record in after:
        key = json.dumps(record, sort_keys=True)
        if key in seen:
            seen.remove(key)
        else:
            fresh.append(record)
    return fresh


def helper_function(local_cloud: Any, helper: HelperStack, logical_id: str) -> str:
    """The physical name of RoutesFunction, DispatcherFunction or ManagerFunction."""
    return helper_resource(local_cloud, helper, logical_id)


def manager_records(
    local_cloud: Any, helper: HelperStack, message: str, session_id: str | None = None
) -> list[dict[str, Any]]:
    """The manager's log records with this message (about this session: its id's 8-character prefix)."""
    return [
        record
        for record in log_records(local_cloud, helper.manager_function_name)
        if record.get("message") == message
        and (session_id is None or record.get("session") == session_id[:8] + "...")
    ]


def routes_records(
    local_cloud: Any, helper: HelperStack, message: str, session_id: str | None = None
) -> list[dict[str, Any]]:
    """The routes function's log records with this message (about this session)."""
    return [
        record
        for record in log_records(local_cloud, helper_function(local_cloud, helper, "RoutesFunction"))
        if record.get("message") == message
        and (session_id is None or record.get("session") == session_id[:8] + "...")
    ]


# --- Functions ----------------------------------------------------------------------------------------------
def configuration(local_cloud: Any, function: str, qualifier: str | None = None) -> dict[str, Any]:
    arguments = {"FunctionName": function, **({"Qualifier": qualifier} if qualifier else {})}
    config = local_cloud.client("lambda").get_function_configuration(**arguments)
    return {key: value for key, value in config.items() if key not in VOLATILE_FIELDS}


def variables(local_cloud: Any, function: str) -> dict[str, str]:
    config = local_cloud.client("lambda").get_function_configuration(FunctionName=function)
    return dict((config.get("Environment") or {}).get("Variables") or {})


def role_state(local_cloud: Any, role_arn: str) -> dict[str, Any]:
    """A role's attached managed policies and tags: what plldb touches on it."""
    iam = local_cloud.client("iam")
    name = role_arn.rsplit("/", 1)[-1]
    return {
        "policies": sorted(
            p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        ),
        "tags": sorted((t["Key"], t["Value"]) for t in iam.list_role_tags(RoleName=name)["Tags"]),
    }


def function_state(local_cloud: Any, function: str) -> dict[str, Any]:
    """Everything plldb may change for a function: configuration, aliases, versions, the role."""
    client = local_cloud.client("lambda")
    config = configuration(local_cloud, function)
    aliases = sorted(
        (
            a["Name"],
            a["FunctionVersion"],
            tuple(sorted(((a.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}).items())),
        )
        for a in client.list_aliases(FunctionName=function)["Aliases"]
    )
    versions = sorted(
        v["Version"] for v in client.list_versions_by_function(FunctionName=function)["Versions"]
    )
    return {
        "configuration": config,
        "aliases": aliases,
        "versions": versions,
        "role": role_state(local_cloud, config["Role"]),
    }


def is_instrumented(local_cloud: Any, helper: HelperStack, function: str) -> bool:
    layers = local_cloud.client("lambda").get_function_configuration(FunctionName=function).get("Layers", [])
    return any(layer["Arn"] == helper.layer_version_arn for layer in layers)
