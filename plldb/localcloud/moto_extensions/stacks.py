"""Stack lifecycle: resource failures become stack states with a reason, rollback, GetTemplate stages, no-op updates.

Gap: moto raised a failure out of CreateStack/UpdateStack as an HTTP 500 and left the stack half-made;
here CREATE fails into ROLLBACK_COMPLETE and UPDATE into UPDATE_ROLLBACK_COMPLETE, as on AWS.
"""

from __future__ import annotations

import json
from typing import Any, cast

from moto.cloudformation import models as cloudformation_models
from moto.cloudformation import responses as cloudformation_responses
from moto.cloudformation.exceptions import ValidationError
from moto.core.common_models import CloudFormationModel
from moto.core.responses import ActionResult

from plldb.localcloud.moto_extensions.core import original, patch
from plldb.localcloud.moto_extensions.stack_events import ResourceFailed, failure_reason
from plldb.localcloud.moto_extensions.templates import parse_template_text

STACK_FAILED_CREATE = "ROLLBACK_COMPLETE"
STATUSES_WITHOUT_OUTPUTS = frozenset(
    {"ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS", "DELETE_COMPLETE"}
)


def stack_create_resources(self: Any) -> None:
    try:
        original(cloudformation_models.Stack, "create_resources")(self)
    except ResourceFailed as failure:
        roll_back_creation(self, failure)


def stack_update(
    self: Any,
    template: str,
    role_arn: str | None = None,
    parameters: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    previous_template, previous_parameters = self.template, dict(self.parameters or {})
    self.pending_parameters = parameters if parameters else self.parameters
    try:
        original(cloudformation_models.Stack, "update")(self, template, role_arn, parameters, tags)
    except ResourceFailed as failure:
        roll_back_update(self, failure, previous_template, previous_parameters)
    except Exception:
        # Refused before any resource changed (invalid template or parameters): keep the old template.
        self.template = previous_template
        raise
    finally:
        self.pending_parameters = None


def stack_resources(self: Any) -> list[Any]:
    # Gap: skipped (unsupported or conditional) resources were listed as rows of empty strings.
    return [
        resource
        for resource in self.resource_map._parsed_resources.values()
        if isinstance(resource, CloudFormationModel) and getattr(resource, "logical_resource_id", None)
    ]


def stack_outputs(self: Any) -> list[dict[str, Any]] | None:
    # Gap: a stack whose creation rolled back (or was deleted) failed to describe, resolving outputs
    # of resources that no longer exist; AWS shows no outputs for it.
    if self.status in STATUSES_WITHOUT_OUTPUTS:
        return None
    outputs = cast(property, original(cloudformation_models.Stack, "outputs")).fget
    return cast(list[dict[str, Any]] | None, outputs(self))  # type: ignore[misc]


def stack_delete(self: Any) -> None:
    self._add_stack_event("DELETE_IN_PROGRESS", resource_status_reason="User Initiated")
    try:
        self.resource_map.delete()
    except Exception as exc:
        self.status = "DELETE_FAILED"
        self._add_stack_event("DELETE_FAILED", resource_status_reason=failure_reason(exc))
        return
    self._add_stack_event("DELETE_COMPLETE")
    self.status = "DELETE_COMPLETE"


def backend_delete_stack(self: Any, name_or_stack_id: str) -> None:
    # A stack that failed to delete stays visible (DELETE_FAILED) and can be deleted again, as on AWS.
    stack = next(
        (s for s in self.stacks.values() if name_or_stack_id in (s.stack_id, s.name)),
        None,
    )
    if stack is None:
        return
    stack.delete()
    if stack.status == "DELETE_FAILED":
        return
    self.stacks.pop(stack.stack_id, None)
    self.deleted_stacks[stack.stack_id] = stack
    for export in stack.exports:
        self.exports.pop(export.name, None)


def backend_execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
    change_set = self.describe_change_set(change_set_name)
    stack = self.stacks[change_set.stack_id]
    creating = change_set.change_set_type == "CREATE"
    previous_template, previous_parameters = stack.template, dict(stack.parameters or {})
    stack._add_stack_event(
        "CREATE_IN_PROGRESS" if creating else "UPDATE_IN_PROGRESS",
        resource_status_reason="User Initiated",
    )
    stack.status = "CREATE_IN_PROGRESS" if creating else "UPDATE_IN_PROGRESS"
    change_set.execution_status = "EXECUTE_IN_PROGRESS"
    try:
        change_set.apply()
    except ResourceFailed as failure:
        change_set.execution_status = "EXECUTE_FAILED"
        if creating:
            roll_back_creation(stack, failure)
        else:
            roll_back_update(stack, failure, previous_template, previous_parameters)
        return
    # Gap: moto kept the stack's template, parameters and outputs of before the change set.
    stack.template = change_set.template
    stack.template_dict = change_set.template_dict
    stack.processed_template = change_set.processed_template
    stack.parameters = dict(change_set.parameters or {})
    stack.description = change_set.template_dict.get("Description")
    stack.output_map = stack._create_output_map()
    stack.status = f"{change_set.change_set_type}_COMPLETE"
    stack._add_stack_event(stack.status)
    change_set.execution_status = "EXECUTE_COMPLETE"


def roll_back_creation(stack: Any, failure: ResourceFailed) -> None:
    stack.status = "ROLLBACK_IN_PROGRESS"
    stack._add_stack_event(
        "ROLLBACK_IN_PROGRESS",
        resource_status_reason=f"The following resource(s) failed to create: [{failure.logical_id}]. "
        "Rollback requested by user.",
    )
    try:
        stack.resource_map.delete()
    except Exception as exc:
        stack.status = "ROLLBACK_FAILED"
        stack._add_stack_event("ROLLBACK_FAILED", resource_status_reason=failure_reason(exc))
        return
    stack.status = STACK_FAILED_CREATE
    stack._add_stack_event(STACK_FAILED_CREATE)


def roll_back_update(stack: Any, failure: ResourceFailed, template: Any, parameters: dict[str, Any]) -> None:
    stack.status = "UPDATE_ROLLBACK_IN_PROGRESS"
    stack._add_stack_event(
        "UPDATE_ROLLBACK_IN_PROGRESS",
        resource_status_reason=f"The following resource(s) failed to update: [{failure.logical_id}]. ",
    )
    stack.template = template
    stack.pending_parameters = parameters
    try:
        stack._parse_template()
        stack.resource_map.update(stack.template_dict, parameters)
    except Exception as exc:
        stack.status = "UPDATE_ROLLBACK_FAILED"
        stack._add_stack_event("UPDATE_ROLLBACK_FAILED", resource_status_reason=failure_reason(exc))
        return
    finally:
        stack.pending_parameters = None
    stack.parameters = parameters
    stack.output_map = stack._create_output_map()
    stack.status = "UPDATE_ROLLBACK_COMPLETE"
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")


def get_template(self: Any) -> Any:
    """Gap 4: GetTemplate ignored TemplateStage; Processed must be the template after the SAM transform."""
    stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
    stage = self._get_param("TemplateStage") or "Original"
    if stage not in ("Original", "Processed"):
        raise ValidationError(message=f"TemplateStage {stage!r} must be Original or Processed")
    body = stack.template
    processed = getattr(stack, "processed_template", None)
    if stage == "Processed" and processed is not None:
        body = json.dumps(processed)
    return ActionResult({"TemplateBody": body, "StagesAvailable": ["Original", "Processed"]})


def validate_different_update(
    self: Any, incoming_params: list[dict[str, Any]] | None, stack_body: str, old_stack: Any
) -> None:
    if self._get_action() != "UpdateStack":
        # CreateChangeSet records a FAILED change set instead (moto's backend does that).
        original(cloudformation_responses.CloudFormationResponse, "_validate_different_update")(
            self, incoming_params, stack_body, old_stack
        )
        return
    if not stack_body:
        return
    new_parameters = self._get_param_values(incoming_params or [], old_stack.parameters or {})
    tags = {item["Key"]: item["Value"] for item in self._get_param("Tags", [])}
    same_tags = not tags or tags == (old_stack.tags or {})
    same_template = parse_template_text(old_stack.template) == parse_template_text(stack_body)
    if same_template and new_parameters == dict(old_stack.parameters or {}) and same_tags:
        raise ValidationError(old_stack.name, message="No updates are to be performed.")


def install() -> None:
    Stack = cloudformation_models.Stack
    Backend = cloudformation_models.CloudFormationBackend
    patch(Stack, "create_resources", stack_create_resources)
    patch(Stack, "update", stack_update)
    patch(Stack, "stack_resources", property(stack_resources))
    patch(Stack, "outputs", property(stack_outputs))
    patch(Stack, "delete", stack_delete)
    patch(Backend, "delete_stack", backend_delete_stack)
    patch(Backend, "execute_change_set", backend_execute_change_set)
    Response = cloudformation_responses.CloudFormationResponse
    patch(Response, "get_template", get_template)
    # UpdateStack with the same template, parameters and tags is refused with "No updates are to be
    # performed." Gap: moto only noticed this when parameters were passed, and compared template text only.
    patch(Response, "_validate_different_update", validate_different_update)
