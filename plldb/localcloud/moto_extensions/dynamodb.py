"""DynamoDB: atomic item operations, and AWS::DynamoDB::Table as CloudFormation manages it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import table as dynamodb_table

from plldb.localcloud.moto_extensions.core import (
    Properties,
    created_from_properties,
    original,
    patch,
    updated_or_replaced,
)

_DYNAMODB_ITEM_OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
    "get_item",
    "batch_get_item",
    "query",
    "scan",
)


# Gap: DynamoDB applies each item write atomically. moto, serving requests on threads, checks a condition
# and then applies an UpdateExpression's actions to the live item one by one, with no lock: two
# conditional writes can both pass (about 2 % of eight-way races), and a concurrent read can see half an
# update (ResponseCode without Response). plldb relies on both being atomic, so item operations are
# serialised here, which is, in effect, what DynamoDB guarantees per item.
_item_lock = threading.RLock()


def serialised(operation: Callable[..., Any]) -> Callable[..., Any]:
    """An item operation of moto's DynamoDB backend, run under the one item lock."""

    @functools.wraps(operation)
    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _item_lock:
            return operation(self, *args, **kwargs)

    return write


# --- AWS::DynamoDB::Table. Gap 3: TimeToLiveSpecification was ignored, and a changed table was dropped from
# the stack on update.
def _backend(account_id: str, region_name: str) -> Any:
    return dynamodb_models.dynamodb_backends[account_id][region_name]


def apply_time_to_live(table: Any, properties: Mapping[str, Any], account_id: str, region_name: str) -> None:
    specification = properties.get("TimeToLiveSpecification")
    if specification:
        _backend(account_id, region_name).update_time_to_live(
            table.name,
            {
                "AttributeName": specification["AttributeName"],
                "Enabled": bool(specification.get("Enabled")),
            },
        )
    elif table.ttl.get("TimeToLiveStatus") == "ENABLED":
        table.ttl = {"TimeToLiveStatus": "DISABLED"}


def table_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    table_name = properties.get("TableName") or resource_name
    table = original(dynamodb_table.Table, "create_from_cloudformation_json").__func__(
        cls, table_name, {"Properties": properties}, account_id, region_name
    )
    apply_time_to_live(table, properties, account_id, region_name)
    return table


def table_replaced(table: Any, properties: Properties, account_id: str, region_name: str) -> bool:
    renamed = (properties.get("TableName") or table.name) != table.name
    return renamed or properties.get("KeySchema") != table.schema


def table_update(table: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    wanted = {index["IndexName"]: index for index in properties.get("GlobalSecondaryIndexes") or []}
    current = {index.name for index in table.global_indexes}
    changes = [{"Delete": {"IndexName": index}} for index in sorted(current - set(wanted))]
    changes += [{"Create": wanted[index]} for index in sorted(set(wanted) - current)]
    _backend(account_id, region_name).update_table(
        name=table.name,
        attr_definitions=properties.get("AttributeDefinitions"),
        global_index=changes,
        throughput=properties.get("ProvisionedThroughput"),
        billing_mode=properties.get("BillingMode", "PROVISIONED"),
        stream_spec=None,
        deletion_protection_enabled=bool(properties.get("DeletionProtectionEnabled", False)),
        warm_throughput=None,
    )
    streams = properties.get("StreamSpecification")
    if bool(streams) != bool((table.stream_specification or {}).get("StreamEnabled")):
        table.set_stream_specification(streams)
    apply_time_to_live(table, properties, account_id, region_name)
    table.tags = list(properties.get("Tags") or [])
    return table


def install() -> None:
    for name in _DYNAMODB_ITEM_OPERATIONS:
        patch(
            dynamodb_models.DynamoDBBackend, name, serialised(getattr(dynamodb_models.DynamoDBBackend, name))
        )
    Table = dynamodb_table.Table
    patch(Table, "create_from_cloudformation_json", created_from_properties(table_create))
    patch(Table, "update_from_cloudformation_json", updated_or_replaced(table_update, table_replaced))
