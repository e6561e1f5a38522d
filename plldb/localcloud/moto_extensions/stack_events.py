"""CloudFormation's resource events and the stacks they belong to (moto records stack-level events only)."""

from __future__ import annotations

import weakref
from typing import Any

from moto.cloudformation import models as cloudformation_models

# Every Stack by id, so resource events find their stack even while it is being deleted.
STACKS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


class ResourceFailed(Exception):
    """One resource could not be created, updated or deleted; its *_FAILED event is already recorded."""

    def __init__(self, logical_id: str, reason: str) -> None:
        super().__init__(f"{logical_id}: {reason}")
        self.logical_id = logical_id
        self.reason = reason


def failure_reason(exc: BaseException) -> str:
    """The message AWS would show for a failed resource operation."""
    if isinstance(exc, ResourceFailed):
        return exc.reason
    message = getattr(exc, "message", None) or getattr(exc, "description", None)
    if isinstance(message, str) and message and not isinstance(exc, KeyError | AttributeError | TypeError):
        return message
    if isinstance(exc, ValueError) and len(exc.args) == 2 and all(isinstance(a, str) for a in exc.args):
        return f"{exc.args[0]}: {exc.args[1]}"
    message = str(exc)
    return (
        f"{type(exc).__name__}: {message}"
        if isinstance(exc, KeyError | AttributeError | TypeError)
        else message
    )


def record_event(
    stack_id: str,
    logical_id: str,
    resource_type: str,
    status: str,
    *,
    physical_id: str | None = None,
    reason: str | None = None,
) -> None:
    """Append one resource event to the stack's history (moto only records stack-level events)."""
    stack = STACKS.get(stack_id)
    if stack is None:
        return
    event = cloudformation_models.Event(
        stack_id=stack.stack_id,
        stack_name=stack.name,
        logical_resource_id=logical_id,
        physical_resource_id=physical_id or "",
        resource_type=resource_type,
        resource_status=status,
        resource_status_reason=reason,
        resource_properties=None,
    )
    stack.events.append(event)
