"""CloudFormation nested stacks: AWS::CloudFormation::Stack (what AWS::Serverless::Application becomes).

Gap 6: nested stacks' physical id is their ARN, GetAtt Outputs.X works, updates happen in place, and a
nested failure fails the parent's resource (moto deleted and recreated nested stacks on update).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moto.cloudformation import models as cloudformation_models
from moto.cloudformation.exceptions import ValidationError
from moto.utilities.utils import get_partition

from plldb.localcloud.moto_extensions.core import (
    Properties,
    as_classmethod,
    cfn_attribute_error,
    patch,
    properties_of,
    tags_as_dict,
    updated_or_replaced,
)
from plldb.localcloud.moto_extensions.stack_events import STACKS


def _backend(account_id: str, region_name: str) -> Any:
    return cloudformation_models.cloudformation_backends[account_id][region_name]


def nested_parameters(properties: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: ",".join(map(str, value)) if isinstance(value, list) else str(value)
        for key, value in (properties.get("Parameters") or {}).items()
    }


def template_body(properties: Mapping[str, Any], account_id: str, region_name: str) -> str:
    return cloudformation_models.get_stack_from_s3_url(
        properties["TemplateURL"], account_id=account_id, partition=get_partition(region_name)
    )


def nested_failure(stack: Any) -> str:
    failed = [
        e for e in stack.events if str(e.resource_status).endswith("_FAILED") and e.resource_status_reason
    ]
    reason = failed[-1].resource_status_reason if failed else stack.status
    return f"Embedded stack {stack.stack_id} was not successfully created: {reason}"


def nested_stack_create(
    cls: Any,
    resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
    **kwargs: Any,
) -> Any:
    properties = properties_of(cloudformation_json)
    nested = _backend(account_id, region_name).create_stack(
        name=resource_name,
        template=template_body(properties, account_id, region_name),
        parameters=nested_parameters(properties),
        tags=tags_as_dict(properties.get("Tags")),
        notification_arns=properties.get("NotificationARNs"),
        timeout_in_mins=properties.get("TimeoutInMinutes"),
    )
    parent = STACKS.get(kwargs.get("StackId", ""))
    nested.parent_id = parent.stack_id if parent is not None else None
    nested.root_id = (getattr(parent, "root_id", None) or parent.stack_id) if parent is not None else None
    if nested.status != "CREATE_COMPLETE":
        raise ValueError("InvalidStackStatus", nested_failure(nested))
    return nested


def nested_stack_update(nested: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    body = template_body(properties, account_id, region_name)
    parameters = nested_parameters(properties)
    if nested.has_template(body) and dict(nested.parameters or {}) == parameters:
        return nested
    updated = _backend(account_id, region_name).update_stack(
        name=nested.stack_id,
        template=body,
        role_arn=None,
        parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        tags=tags_as_dict(properties.get("Tags")) or None,
    )
    if updated.status != "UPDATE_COMPLETE":
        raise ValueError("InvalidStackStatus", nested_failure(updated).replace("created", "updated"))
    return updated


def nested_stack_delete(
    cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
) -> None:
    cloudformation = _backend(account_id, region_name)
    cloudformation.delete_stack(resource_name)
    if any(stack.stack_id == resource_name for stack in cloudformation.stacks.values()):
        raise ValueError("InvalidStackStatus", f"Embedded stack {resource_name} could not be deleted")


def nested_stack_attribute(self: Any, attribute_name: str) -> str:
    if attribute_name.startswith("Outputs."):
        key = attribute_name.split(".", 1)[1]
        for output in self.outputs or []:
            if output["OutputKey"] == key:
                return str(output["OutputValue"])
        raise ValidationError(message=f"Template error: stack {self.name} has no output named {key}")
    raise cfn_attribute_error()


def install() -> None:
    Stack = cloudformation_models.Stack
    patch(Stack, "create_from_cloudformation_json", as_classmethod(nested_stack_create))
    patch(Stack, "update_from_cloudformation_json", updated_or_replaced(nested_stack_update))
    patch(Stack, "delete_from_cloudformation_json", as_classmethod(nested_stack_delete))
    patch(Stack, "physical_resource_id", property(lambda self: self.stack_id))
    patch(Stack, "get_cfn_attribute", nested_stack_attribute)
