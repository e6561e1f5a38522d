"""Reading the local cloud's state as an end-to-end test checks it: the helper stack's tables, and
everything plldb may change on a function (its configuration, its aliases and versions, its role)."""

from __future__ import annotations

from typing import Any

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack

# Fields Lambda itself changes on every update; everything else must come back exactly.
VOLATILE_FIELDS = {
    "ResponseMetadata",
    "LastModified",
    "RevisionId",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
}


def helper_resource(local_cloud: Any, helper: HelperStack, logical_id: str) -> str:
    """The physical id of one of the helper stack's resources (its tables are not outputs)."""
    return str(
        local_cloud.client("cloudformation").describe_stack_resource(
            StackName=helper.stack_id, LogicalResourceId=logical_id
        )["StackResourceDetail"]["PhysicalResourceId"]
    )


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


def configuration(local_cloud: Any, function: str, qualifier: str | None = None) -> dict[str, Any]:
    arguments = {"FunctionName": function, **({"Qualifier": qualifier} if qualifier else {})}
    config = local_cloud.client("lambda").get_function_configuration(**arguments)
    return {key: value for key, value in config.items() if key not in VOLATILE_FIELDS}


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
