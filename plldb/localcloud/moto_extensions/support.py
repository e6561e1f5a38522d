"""What the local cloud's CloudFormation can deploy, and the refusal of a template that needs more.

Gap: moto skipped a resource type it has no model for (a warning, then the stack "succeeded" without
it) and failed with an HTTP 500 on a ``Fn::GetAtt`` its model cannot answer (``AttributeError``: the
EFS access point has no ``get_cfn_attribute``), leaving the stack stuck in CREATE_IN_PROGRESS and the
client with a parse error. The template is now checked before anything is created, as CloudFormation
checks a template ("Template format error: Unrecognized resource types: [...]", the answer of
CreateStack and ValidateTemplate to a type it does not know): a resource type the local cloud does not
emulate, or an attribute it cannot resolve, refuses the template with a ValidationError naming the
resource, its type and what is not emulated, and nothing is created or changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from moto.cloudformation import parsing
from moto.cloudformation.exceptions import ValidationError

# Types a template may declare that no model creates: CloudFormation's own, handled by the stack itself,
# and AWS::CDK::Metadata, the resource the CDK adds to every stack it synthesizes for its version
# reporting (CDK Developer Guide, "Version reporting"); it creates nothing in the account.
HANDLED_BY_THE_STACK = frozenset({*parsing.NULL_MODELS, "AWS::CDK::Metadata"})
# Placeholders in moto's model map that are no resource type.
NOT_RESOURCE_TYPES = frozenset({"?", "AWS::SERVICE::RESOURCE"})
CUSTOM_RESOURCE_TYPES = ("Custom::", "AWS::CloudFormation::CustomResource")
DOCS = "docs/localcloud.md lists what it emulates"


def model_class(resource_type: str) -> Any:
    """The model that creates resources of this type, or None when the local cloud has none."""
    if resource_type.startswith(CUSTOM_RESOURCE_TYPES):
        return parsing.CustomModel
    return parsing.get_model_map().get(resource_type)


def supported_resource_types() -> list[str]:
    """Every resource type a template deployed to the local cloud may declare (after the SAM transform)."""
    types = set(parsing.get_model_map()) - NOT_RESOURCE_TYPES
    return sorted(types | HANDLED_BY_THE_STACK)


def resolves_attribute(resource_type: str, attribute: str) -> bool:
    """Whether Fn::GetAtt of this attribute resolves for a resource of this type."""
    model = model_class(resource_type)
    if model is parsing.CustomModel:
        return True  # a custom resource's attributes are whatever its provider returns
    if model is None or not callable(getattr(model, "get_cfn_attribute", None)):
        return False
    return bool(model.has_cfn_attr(attribute))


def _attribute_references(value: Any) -> Iterator[tuple[str, str]]:
    """(logical id, attribute) of every Fn::GetAtt and ${Resource.Attribute} in a template fragment."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Fn::GetAtt":
                target = item if isinstance(item, list) else str(item).split(".", 1)
                if len(target) == 2 and isinstance(target[0], str) and isinstance(target[1], str):
                    yield target[0], target[1]
                else:
                    yield from _attribute_references(item)
            elif key == "Fn::Sub":
                text = item[0] if isinstance(item, list) and item else item
                variables = item[1] if isinstance(item, list) and len(item) > 1 else {}
                if isinstance(text, str):
                    for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                        if "." in name and name not in (variables or {}):
                            logical_id, attribute = name.split(".", 1)
                            yield logical_id, attribute
                yield from _attribute_references(variables)
            else:
                yield from _attribute_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _attribute_references(item)


def unsupported(template: Mapping[str, Any]) -> str | None:
    """Why the local cloud cannot deploy this (processed) template, or None when it can."""
    resources = template.get("Resources") or {}
    for logical_id, resource in resources.items():
        resource_type = str((resource or {}).get("Type", ""))
        if resource_type in HANDLED_BY_THE_STACK or model_class(resource_type) is not None:
            continue
        return (
            f"Resource {logical_id} ({resource_type}): the local cloud does not emulate this resource type; "
            f"{DOCS}."
        )
    for section in ("Resources", "Outputs"):
        for logical_id, attribute in _attribute_references(template.get(section) or {}):
            resource = resources.get(logical_id)
            if not isinstance(resource, dict):
                continue  # not a resource (validate_references reports undefined names)
            resource_type = str(resource.get("Type", ""))
            if not resolves_attribute(resource_type, attribute):
                return (
                    f"Resource {logical_id} ({resource_type}): the local cloud does not emulate its "
                    f"attribute {attribute} (Fn::GetAtt {logical_id}.{attribute}); {DOCS}."
                )
    return None


def validate_support(template: Mapping[str, Any]) -> None:
    """Refuse, before anything is created, a template the local cloud cannot deploy."""
    reason = unsupported(template)
    if reason is not None:
        raise ValidationError(message=reason)
