"""Resource lifecycle: create, update and delete one resource, and the update of a whole stack, as CloudFormation does."""

from __future__ import annotations

import copy
import logging
import string
from collections.abc import Mapping
from typing import Any

from moto.cloudformation import parsing
from moto.core.common_models import CloudFormationModel
from moto.moto_api._internal import mock_random

from plldb.localcloud.moto_extensions.core import (
    delete_one,
    deletion_policy,
    original,
    patch,
    physical_id_of,
)
from plldb.localcloud.moto_extensions.stack_events import ResourceFailed, failure_reason, record_event
from plldb.localcloud.moto_extensions.templates import template_references

LOG = logging.getLogger(__name__)

# Longest physical name CloudFormation generates for a type (the service's own limit).
GENERATED_NAME_LIMITS = {
    "AWS::Lambda::Function": 64,
    "AWS::IAM::Role": 64,
    "AWS::Events::Rule": 64,
    "AWS::StepFunctions::StateMachine": 80,
    "AWS::SQS::Queue": 80,
    "AWS::IAM::ManagedPolicy": 128,
    "AWS::Lambda::LayerVersion": 140,
    "AWS::SNS::Topic": 256,
    "AWS::DynamoDB::Table": 255,
}


def generate_resource_name(resource_type: str, stack_name: str, logical_id: str) -> str:
    """`{stack}-{LogicalId}-{RANDOM}` as CloudFormation names resources, cut to the service's length limit.

    Gap: moto produced names longer than Lambda (64) or IAM (64) accept for long stack names.
    """
    limit = GENERATED_NAME_LIMITS.get(resource_type)
    if limit is None:
        return original(parsing, "generate_resource_name")(resource_type, stack_name, logical_id)
    suffix = "".join(mock_random.choice(string.ascii_uppercase + string.digits) for _ in range(12))
    budget = limit - len(suffix) - 1  # for "{stack}-{logical}"
    logical_part = logical_id[: max(budget // 2, budget - 1 - len(stack_name))]
    stack_part = stack_name[: budget - 1 - len(logical_part)].rstrip("-")
    return f"{stack_part}-{logical_part}-{suffix}"


def create_resource(
    logical_id: str,
    resource_json: dict[str, Any],
    resources_map: Any,
    account_id: str,
    region_name: str,
) -> Any:
    """Create one resource, recording CREATE_IN_PROGRESS / CREATE_COMPLETE / CREATE_FAILED events."""
    condition = resource_json.get("Condition")
    if condition and not resources_map.lazy_condition_map[condition]:
        return None
    resource_type = resource_json["Type"]
    parsed = parsing.parse_resource_and_generate_name(logical_id, resource_json, resources_map)
    if not parsed:
        return None
    resource_class, cleaned_json, physical_name = parsed
    resolved = copy.deepcopy(cleaned_json.get("Properties") or {})
    record_event(resources_map.stack_id, logical_id, resource_type, "CREATE_IN_PROGRESS")
    try:
        resource = resource_class.create_from_cloudformation_json(
            physical_name,
            cleaned_json,
            account_id,
            region_name,
            LogicalId=logical_id,
            StackId=resources_map.stack_id,
            ResourceType=resource_type,
        )
    except Exception as exc:
        reason = failure_reason(exc)
        LOG.info("creating %s (%s) failed: %s", logical_id, resource_type, reason)
        record_event(resources_map.stack_id, logical_id, resource_type, "CREATE_FAILED", reason=reason)
        raise ResourceFailed(logical_id, reason) from exc
    resource.cf_resource_type = resource_type
    resource.logical_resource_id = logical_id
    resource.plldb_properties = resolved
    record_event(
        resources_map.stack_id,
        logical_id,
        resource_type,
        "CREATE_COMPLETE",
        physical_id=physical_id_of(resource),
    )
    return resource


def has_update(resource_class: Any) -> bool:
    return not hasattr(resource_class.update_from_cloudformation_json, "__isabstractmethod__")


def update_resource(
    logical_id: str,
    resource_json: dict[str, Any],
    resources_map: Any,
    account_id: str,
    region_name: str,
) -> Any:
    """Update one resource in place, or replace it when its type cannot be updated (as AWS replaces it).

    Gap: for types without an update moto stored None as the resource, which then vanished from the stack.
    """
    resource_type = resource_json["Type"]
    parsed = parsing.parse_resource_and_generate_name(logical_id, resource_json, resources_map)
    if not parsed:
        return None
    resource_class, cleaned_json, new_name = parsed
    resolved = copy.deepcopy(cleaned_json.get("Properties") or {})
    original = resources_map._parsed_resources[logical_id]
    record_event(
        resources_map.stack_id,
        logical_id,
        resource_type,
        "UPDATE_IN_PROGRESS",
        physical_id=physical_id_of(original),
    )
    try:
        if has_update(resource_class):
            resource = resource_class.update_from_cloudformation_json(
                original_resource=original,
                new_resource_name=new_name,
                cloudformation_json=cleaned_json,
                account_id=account_id,
                region_name=region_name,
            )
        else:
            resource = resource_class.create_from_cloudformation_json(
                new_name,
                cleaned_json,
                account_id,
                region_name,
                LogicalId=logical_id,
                StackId=resources_map.stack_id,
                ResourceType=resource_type,
            )
            if deletion_policy(resource_json, "UpdateReplacePolicy") != "Retain":
                delete_one(original, resource_json, account_id, region_name)
    except Exception as exc:
        reason = failure_reason(exc)
        record_event(resources_map.stack_id, logical_id, resource_type, "UPDATE_FAILED", reason=reason)
        raise ResourceFailed(logical_id, reason) from exc
    if resource is None:
        resource = original
    resource.cf_resource_type = resource_type
    resource.logical_resource_id = logical_id
    resource.plldb_properties = resolved
    record_event(
        resources_map.stack_id,
        logical_id,
        resource_type,
        "UPDATE_COMPLETE",
        physical_id=physical_id_of(resource),
    )
    return resource


def resource_map_delete_resource(self: Any, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
    logical_id = getattr(parsed_resource, "logical_resource_id", "")
    resource_type = resource_json.get("Type", "")
    physical_id = physical_id_of(parsed_resource)
    record_event(self.stack_id, logical_id, resource_type, "DELETE_IN_PROGRESS", physical_id=physical_id)
    try:
        delete_one(parsed_resource, resource_json, self._account_id, self._region_name)
    except Exception as exc:
        reason = failure_reason(exc)
        record_event(
            self.stack_id, logical_id, resource_type, "DELETE_FAILED", physical_id=physical_id, reason=reason
        )
        raise ResourceFailed(logical_id, reason) from exc
    record_event(self.stack_id, logical_id, resource_type, "DELETE_COMPLETE", physical_id=physical_id)


def dependency_order(resources: Mapping[str, Any]) -> list[str]:
    """Logical ids so that each comes after everything it refers to or DependsOn (cycles keep file order)."""
    dependencies: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        refs = template_references(resource.get("Properties") or {}) if isinstance(resource, dict) else set()
        depends_on = resource.get("DependsOn") if isinstance(resource, dict) else None
        if isinstance(depends_on, str):
            refs.add(depends_on)
        elif isinstance(depends_on, list):
            refs.update(item for item in depends_on if isinstance(item, str))
        dependencies[logical_id] = {ref for ref in refs if ref in resources and ref != logical_id}
    ordered: list[str] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(logical_id: str) -> None:
        if logical_id in placed or logical_id in visiting:
            return
        visiting.add(logical_id)
        for dependency in sorted(dependencies[logical_id]):
            visit(dependency)
        visiting.discard(logical_id)
        placed.add(logical_id)
        ordered.append(logical_id)

    for logical_id in resources:
        visit(logical_id)
    return ordered


def condition_holds(resources_map: Any, resource_json: Mapping[str, Any]) -> bool:
    condition = resource_json.get("Condition")
    return not condition or bool(resources_map.lazy_condition_map[condition])


def resolved_properties_changed(resources_map: Any, resource: Any, resource_json: dict[str, Any]) -> bool:
    """Whether the resource's properties resolve differently now (a resource it refers to changed)."""
    previous = getattr(resource, "plldb_properties", None)
    if previous is None:
        return False
    current = parsing.clean_json(copy.deepcopy(resource_json.get("Properties") or {}), resources_map)
    return bool(current != previous)


def update_resource_map(
    self: Any, template: dict[str, Any], parameters: dict[str, Any] | None = None
) -> None:
    """Apply a new template to a stack the way CloudFormation does.

    Gaps: moto deleted removed resources before creating their replacements, updated in no particular
    order, and did not update a resource whose own text was unchanged although a resource it refers to
    had been replaced (for example a function whose layer got a new version).
    Here: create and update in dependency order, re-resolving properties; delete removed resources last.
    """
    old_resources = dict(self._resource_json_map)
    new_resources = template["Resources"]
    self._template = template
    if parameters:
        self.input_parameters = parameters
    self.load_mapping()
    self.transform_mapping()
    self.load_parameters()
    self.load_conditions()
    self._resource_json_map = new_resources

    removed = [logical_id for logical_id in old_resources if logical_id not in new_resources]
    for logical_id in dependency_order(new_resources):
        resource_json = new_resources[logical_id]
        existing = self._parsed_resources.get(logical_id)
        if not condition_holds(self, resource_json):
            if existing is not None:
                removed.append(logical_id)
            continue
        if existing is None:
            _ = self[logical_id]
            continue
        if old_resources.get(logical_id) != resource_json or resolved_properties_changed(
            self, existing, resource_json
        ):
            updated = update_resource(logical_id, resource_json, self, self._account_id, self._region_name)
            if updated is not None:
                self._parsed_resources[logical_id] = updated

    removal_order = dependency_order({key: old_resources.get(key) or new_resources[key] for key in removed})
    for logical_id in reversed(removal_order):
        resource = self._parsed_resources.pop(logical_id, None)
        resource_json = old_resources.get(logical_id) or new_resources[logical_id]
        if resource is None or isinstance(resource, str | dict | list):
            continue
        if deletion_policy(resource_json) == "Retain":
            continue
        self._delete_resource(resource, resource_json)


def delete_resource_map(self: Any) -> None:
    """Delete a stack's resources, dependents first; Retain resources stay (DELETE_SKIPPED).

    Gap: moto deleted in arbitrary order and retried what failed, so a policy still attached to a role
    failed first and the error escaped as an HTTP 500 when retries ran out.
    """
    first_failure: ResourceFailed | None = None
    for logical_id in reversed(dependency_order(self._resource_json_map)):
        resource_json = self._resource_json_map[logical_id]
        resource = self._parsed_resources.get(logical_id)
        if not isinstance(resource, CloudFormationModel):
            continue
        if deletion_policy(resource_json) == "Retain":
            record_event(
                self.stack_id,
                logical_id,
                resource_json["Type"],
                "DELETE_SKIPPED",
                physical_id=physical_id_of(resource),
            )
            self._parsed_resources.pop(logical_id, None)
            continue
        try:
            self._delete_resource(resource, resource_json)
        except ResourceFailed as failure:
            first_failure = first_failure or failure
            continue
        self._parsed_resources.pop(logical_id, None)
    if first_failure is not None:
        raise first_failure


def resource_map_init(self: Any, *args: Any, **kwargs: Any) -> None:
    original(parsing.ResourceMap, "__init__")(self, *args, **kwargs)
    # Gap: AWS::NotificationARNs was unknown to moto.
    self._parsed_resources.setdefault("AWS::NotificationARNs", [])


def install() -> None:
    """Per-resource events, failures naming the resource, correct updates and generated names."""
    patch(parsing, "parse_and_create_resource", create_resource)
    patch(parsing, "parse_and_update_resource", update_resource)
    patch(parsing, "generate_resource_name", generate_resource_name)
    patch(parsing.ResourceMap, "_delete_resource", resource_map_delete_resource)
    patch(parsing.ResourceMap, "update", update_resource_map)
    patch(parsing.ResourceMap, "delete", delete_resource_map)
    patch(parsing.ResourceMap, "__init__", resource_map_init)
