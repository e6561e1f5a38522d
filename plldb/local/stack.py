"""Which local source runs each deployed function: the stack's functions matched to the local template.

CloudFormation knows the physical function names and their logical ids, stack by stack; the local
template (plldb.local.template: a SAM template, or a CDK app's synthesized one) knows the code, keyed
by the same logical id path ("App/Func" inside nested applications and nested stacks). Walking the
deployed stack tree gives physical name -> path -> local function, so an invocation of any deployed
function finds its local handler, and a function without local code says exactly why.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from plldb.errors import PlldbError
from plldb.local.template import LocalFunction, TemplateFunctions, scan_template

LAMBDA_FUNCTION = "AWS::Lambda::Function"
NESTED_STACK = "AWS::CloudFormation::Stack"

TemplateScanner = Callable[[Path], TemplateFunctions]


@dataclass(frozen=True)
class DeployedFunction:
    """One AWS::Lambda::Function of the stack tree and the local function that answers for it."""

    physical_name: str
    logical_id: str
    logical_path: str  # logical ids from the root stack down, joined by "/": "App/HelloFunction"
    stack_id: str  # the (nested) stack that owns it
    local: LocalFunction | None = None
    missing_reason: str | None = None  # why there is no local function
    aliases: tuple[
        str, ...
    ] = ()  # other names of the function: its CDK construct path ("Audit/AuditFunction")

    def matches(self, patterns: Sequence[str]) -> bool:
        """fnmatch on the logical id, its path, an alias or the physical name; no patterns select all."""
        if not patterns:
            return True
        names = (self.logical_id, self.logical_path, *self.aliases, self.physical_name)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)

    @property
    def notice(self) -> str | None:
        """Set when the local code is a build's copy (sam build, CDK staging or bundling), not the source."""
        return self.local.code_notice if self.local is not None else None

    @property
    def source(self) -> str | None:
        """Where the handler lives, as shown to the user: "hello/app.py:lambda_handler"."""
        if self.local is None:
            return None
        module, _, function = self.local.handler.rpartition(".")
        module_file = Path(self.local.code_dir, *module.split(".")).with_suffix(".py")
        base = self.local.template_dir or Path.cwd()
        try:
            shown = module_file.relative_to(base)
        except ValueError:
            shown = module_file
        return f"{shown}:{function}"


@dataclass(frozen=True)
class StackMap:
    """Every function of a deployed stack tree, with its local counterpart where there is one."""

    stack_name: str
    functions: tuple[DeployedFunction, ...]
    notices: tuple[str, ...] = ()  # about the local template as a whole (a sam build output run as it is)

    def by_physical_name(self, name_or_arn: str) -> DeployedFunction | None:
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]
        for function in self.functions:
            if function.physical_name == name:
                return function
        return None

    def selected(self, patterns: Sequence[str]) -> list[DeployedFunction]:
        return [function for function in self.functions if function.matches(patterns)]


def map_stack(
    session: boto3.Session,
    stack_name: str,
    template_path: Path,
    scan: TemplateScanner = scan_template,
) -> StackMap:
    """List the stack tree's functions and attach each to its local definition.

    ``template_path`` is the stack's template as ``plldb.local.template.locate_template`` finds it (for
    a CDK app, the stack's template in the cloud assembly). Raises PlldbError (one line with the fix)
    when the template or the stack is missing, or when the stack has no Lambda functions.
    """
    if not template_path.is_file():
        raise PlldbError(
            f"Template {template_path} was not found.",
            "Run in your SAM project folder or pass --template (or set template_file in samconfig.toml).",
        )
    template = scan(template_path)
    aliases: dict[str, list[str]] = {}
    for alias, path in template.aliases.items():
        aliases.setdefault(path, []).append(alias)
    cloudformation = session.client("cloudformation")
    functions: list[DeployedFunction] = []

    def walk(stack_id: str, prefix: str) -> None:
        for resource in list_stack_resources(cloudformation, stack_id, session.region_name):
            physical_id = resource.get("PhysicalResourceId")
            if not physical_id:
                continue
            path = prefix + resource["LogicalResourceId"]
            if resource["ResourceType"] == LAMBDA_FUNCTION:
                local = template.local.get(path)
                reason = None
                if local is None:
                    reason = template.unavailable.get(path) or unavailable_ancestor(template, path)
                    reason = reason or f"{path} is not in {template_path.name}"
                functions.append(
                    DeployedFunction(
                        physical_name=physical_id,
                        logical_id=resource["LogicalResourceId"],
                        logical_path=path,
                        stack_id=stack_id,
                        local=local,
                        missing_reason=reason,
                        aliases=tuple(aliases.get(path, ())),
                    )
                )
            elif resource["ResourceType"] == NESTED_STACK:
                walk(physical_id, path + "/")

    walk(stack_name, "")
    if not functions:
        raise PlldbError(
            f"Stack {stack_name!r} has no Lambda functions (AWS::Lambda::Function) to debug.",
            "Attach to a stack deployed from a SAM template with AWS::Serverless::Function resources.",
        )
    return StackMap(stack_name=stack_name, functions=tuple(functions), notices=tuple(template.notices))


def unavailable_ancestor(template: TemplateFunctions, path: str) -> str | None:
    """Why a nested application (and so every function in it) has no local template, if that is why."""
    parts = path.split("/")
    for depth in range(len(parts) - 1, 0, -1):
        reason = template.unavailable.get("/".join(parts[:depth]))
        if reason is not None:
            return f"{'/'.join(parts[:depth])}: {reason}"
    return None


def list_stack_resources(cloudformation: Any, stack: str, region: str | None = None) -> list[dict[str, Any]]:
    """Every resource summary of one stack (all pages); a missing stack is a PlldbError."""
    resources: list[dict[str, Any]] = []
    try:
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
            resources.extend(page.get("StackResourceSummaries", []))
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            where = f" in region {region}" if region else ""
            raise PlldbError(
                f"Stack {stack!r} was not found{where}.",
                "Check --stack-name and --region (or stack_name and region in samconfig.toml).",
            )
        raise
    return resources
