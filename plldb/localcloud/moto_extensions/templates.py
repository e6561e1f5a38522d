"""Templates: parsing, the SAM transform, reference validation (CloudFormation's template handling)."""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from collections.abc import Mapping
from typing import Any, cast

import boto3
from moto.cloudformation import models as cloudformation_models
from moto.cloudformation.exceptions import ValidationError
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.utilities.utils import get_partition

from plldb.localcloud.documents import parse_json_or_yaml, plain_data
from plldb.localcloud.moto_extensions.core import original, patch
from plldb.localcloud.moto_extensions.stack_events import STACKS

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::AccountId",
        "AWS::NotificationARNs",
        "AWS::NoValue",
        "AWS::Partition",
        "AWS::Region",
        "AWS::StackId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }
)

_translate_lock = threading.Lock()


def parse_template_text(template: str | dict[str, Any]) -> dict[str, Any]:
    """JSON or YAML template text as data, with short-form tags (!Ref, !GetAtt A.Outputs.B) in long form.

    Gap: moto's own YAML reader splits `!GetAtt Child.Outputs.Name` at every dot and cannot read nested
    stack outputs; cfn-flip splits at the first dot as CloudFormation does.
    """
    if isinstance(template, dict):
        return template
    try:
        data = parse_json_or_yaml(template)
    except Exception as exc:
        raise ValidationError(message=f"Template format error: {exc}")
    if not isinstance(data, dict):
        raise ValidationError(message="Template format error: a template must be a JSON or YAML object")
    return cast(dict[str, Any], data)


def declared_transforms(template: Mapping[str, Any]) -> list[str]:
    transform = template.get("Transform")
    if transform is None:
        return []
    items = transform if isinstance(transform, list) else [transform]
    return [item if isinstance(item, str) else str(item.get("Name")) for item in items]


@functools.cache
def aws_managed_policies() -> dict[str, dict[str, Any]]:
    """AWS managed policies by name (moto's offline copy of them, with their documents and paths)."""
    return cast(dict[str, dict[str, Any]], json.loads(aws_managed_policies_data))


class OfflineManagedPolicyLoader:
    """What SAM's translator asks IAM for (managed policy name -> ARN), answered without calling IAM."""

    def __init__(self, partition: str) -> None:
        self.partition = partition

    def load(self) -> dict[str, str]:
        return {
            name: f"arn:{self.partition}:iam::aws:policy{data.get('Path', '/')}{name}"
            for name, data in aws_managed_policies().items()
        }


class _DefaultFeatures:
    """SAM's feature toggles as an unconfigured deployment sees them: all off (without a warning per query)."""

    def is_enabled(self, feature_name: str) -> bool:
        return False


def apply_sam_transform(
    template: dict[str, Any], parameters: Mapping[str, Any], region: str
) -> dict[str, Any]:
    """The CloudFormation template AWS::Serverless-2016-10-31 turns a SAM template into.

    Gap: moto ignores the Transform, so every AWS::Serverless::* resource was skipped.
    """
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.utils.py27hash_fix import (
        to_py27_compatible_template,
        undo_mark_unicode_str_in_template,
    )

    unsupported = [name for name in declared_transforms(template) if name != SAM_TRANSFORM]
    if unsupported:
        raise ValidationError(
            message=f"Transform {', '.join(unsupported)} is not supported by the local cloud"
        )
    document = copy.deepcopy(template)
    parameter_values = {key: value for key, value in parameters.items() if value is not None}
    loader = OfflineManagedPolicyLoader(get_partition(region))
    with _translate_lock:
        try:
            to_py27_compatible_template(document, parameter_values)
            translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=region))
            try:
                translated = translator.translate(
                    document,
                    parameter_values=parameter_values,
                    feature_toggle=_DefaultFeatures(),
                    get_managed_policy_map=loader.load,
                )
            finally:
                translator.metrics.publish()  # to nowhere; unpublished metrics would be warned about
        except InvalidDocumentException as exc:
            causes = " ".join(str(getattr(cause, "message", cause)) for cause in exc.causes)
            raise ValidationError(
                message=f"Transform {SAM_TRANSFORM} failed with: {exc.message} {causes}".strip()
            )
        except Exception as exc:
            raise ValidationError(message=f"Transform {SAM_TRANSFORM} failed with: {exc}")
        processed = undo_mark_unicode_str_in_template(translated)
    return cast(dict[str, Any], plain_data(processed))


def _sub_variables(argument: Any) -> tuple[list[str], Any]:
    """Names a Fn::Sub string refers to (minus its own variables), and the variable map's values."""
    if isinstance(argument, list) and argument:
        text, variables = argument[0], argument[1] if len(argument) > 1 else {}
    else:
        text, variables = argument, {}
    if not isinstance(text, str):
        return [], variables
    names = [name for name in re.findall(r"\$\{([^!}][^}]*)\}", text) if name not in (variables or {})]
    return names, variables


def template_references(value: Any) -> set[str]:
    """Logical ids (or parameter names) a template fragment refers to through Ref, GetAtt and Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                target = item[0] if isinstance(item, list) and item else item
                if isinstance(target, str):
                    found.add(target.split(".", 1)[0])
            elif key == "Fn::Sub":
                names, variables = _sub_variables(item)
                found.update(name.split(".", 1)[0] for name in names)
                found.update(template_references(variables))
            else:
                found.update(template_references(item))
    elif isinstance(value, list):
        for item in value:
            found.update(template_references(item))
    return found


def validate_references(template: Mapping[str, Any]) -> None:
    """Refuse a template that refers to undefined names, as CloudFormation does before creating anything.

    Gap: moto failed half-way through creating such a stack with an HTTP 500 (KeyError).
    """
    resources = template.get("Resources") or {}
    known = set(resources) | set(template.get("Parameters") or {}) | PSEUDO_PARAMETERS
    for section in ("Resources", "Outputs"):
        missing = sorted(template_references(template.get(section) or {}) - known)
        if missing:
            raise ValidationError(
                message=f"Template format error: Unresolved resource dependencies [{', '.join(missing)}] "
                f"in the {section} block of the template"
            )


def process(
    template: Any, parameters: Mapping[str, Any] | None, region: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the template moto deploys, the processed template when a transform applied)."""
    if template == {} or template is None:
        return {}, None
    from plldb.localcloud.moto_extensions.support import validate_support

    source = parse_template_text(template)
    if not declared_transforms(source):
        validate_references(source)
        validate_support(source)
        return source, None
    processed = apply_sam_transform(source, parameters or {}, region)
    validate_references(processed)
    validate_support(processed)
    return processed, processed


# --- moto's Stack and ChangeSet read templates as CloudFormation does -----------------------------------------
def stack_init(
    self: Any,
    stack_id: str,
    name: str,
    template: Any,
    parameters: dict[str, str],
    *args: Any,
    **kwargs: Any,
) -> None:
    # _parse_template runs inside moto's __init__ before it stores these; the transform needs them.
    self.stack_id = stack_id
    self.name = name
    self.parameters = parameters
    self.region_name = kwargs.get("region_name") or (args[1] if len(args) > 1 else "us-east-1")
    self.processed_template = None
    STACKS[stack_id] = self
    original(cloudformation_models.Stack, "__init__")(
        self, stack_id, name, template, parameters, *args, **kwargs
    )


def stack_parse_template(self: Any) -> None:
    parameters = self.__dict__.get("pending_parameters")
    if parameters is None:
        parameters = self.parameters
    self.template_dict, self.processed_template = process(self.template, parameters, self.region_name)


def stack_has_template(self: Any, other_template: str) -> bool:
    return bool(parse_template_text(self.template) == parse_template_text(other_template))


def change_set_parse_template(self: Any) -> None:
    self.template_dict, self.processed_template = process(
        self.template, self.parameters, self.stack.region_name
    )


def install() -> None:
    """Gap 4: read templates like CloudFormation and apply the SAM transform on create, update and change sets."""
    Stack = cloudformation_models.Stack
    patch(Stack, "__init__", stack_init)
    patch(Stack, "_parse_template", stack_parse_template)
    patch(Stack, "parse_template", staticmethod(parse_template_text))
    patch(Stack, "has_template", stack_has_template)
    patch(cloudformation_models.ChangeSet, "_parse_template", change_set_parse_template)
