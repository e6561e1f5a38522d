"""Stacks as the helper stack sees them: a reference resolved to its StackId, and the functions it holds.

Every comparison, lock and record uses the StackId (an ARN that names one stack for ever), never the
name a client typed: a name and a StackId that denote the same stack must never be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from plldb import protocol
from plldb.lambda_common import error_code, error_text

MAX_NESTING_DEPTH = 10
_GONE_STATUSES = ("DELETE_COMPLETE",)


@dataclass(frozen=True)
class Stack:
    stack_id: str
    name: str
    status: str


@dataclass(frozen=True)
class StackFunction:
    function_name: str  # physical name
    logical_id: str
    path: str  # logical ids from the debugged stack down, e.g. "Api/HelloFunction" in a nested stack


def resolve_stack(cloudformation: Any, reference: str) -> Stack | None:
    """The live stack a name or StackId denotes, or None (never a deleted one)."""
    if not protocol.is_stack_reference(reference):
        return None
    try:
        stacks = cloudformation.describe_stacks(StackName=reference)["Stacks"]
    except ClientError as exc:
        if error_code(exc) == "ValidationError" and "does not exist" in error_text(exc):
            return None
        raise
    for stack in stacks:
        status = str(stack.get("StackStatus") or "")
        if status not in _GONE_STATUSES:
            return Stack(str(stack["StackId"]), str(stack["StackName"]), status)
    return None


def list_stack_functions(cloudformation: Any, stack_id: str) -> list[StackFunction]:
    """Every Lambda function of the stack and of its nested stacks, in template order."""
    functions: list[StackFunction] = []

    def walk(stack: str, prefix: str, depth: int) -> None:
        paginator = cloudformation.get_paginator("list_stack_resources")
        for page in paginator.paginate(StackName=stack):
            for summary in page.get("StackResourceSummaries", []):
                physical = summary.get("PhysicalResourceId")
                state = str(summary.get("ResourceStatus") or "")
                if not physical or state.startswith("DELETE"):
                    continue
                logical = str(summary.get("LogicalResourceId"))
                kind = summary.get("ResourceType")
                if kind == "AWS::Lambda::Function":
                    functions.append(StackFunction(str(physical), logical, prefix + logical))
                elif kind == "AWS::CloudFormation::Stack" and depth < MAX_NESTING_DEPTH:
                    walk(str(physical), prefix + logical + "/", depth + 1)

    walk(stack_id, "", 0)
    return functions


def function_names(functions: list[StackFunction]) -> dict[str, StackFunction]:
    return {function.function_name: function for function in functions}
