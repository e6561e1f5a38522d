"""What every extension module shares: one way to patch moto, and the base of the CloudFormation models.

Every change to a moto class or module goes through :func:`patch`, which remembers what it replaced:
:func:`original` gives a patched function the behaviour it wraps, and :func:`restore` undoes a group.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from moto.cloudformation import parsing
from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

_MISSING = object()
# (target, name) -> what getattr gave before the first patch, and what the target itself held (to restore).
_originals: dict[tuple[Any, str], Any] = {}
_own_attributes: dict[tuple[Any, str], Any] = {}
_groups: dict[str, list[tuple[Any, str]]] = {}


def patch(target: Any, name: str, value: Any, *, group: str = "moto") -> None:
    """Replace one attribute of a moto class or module (every patch goes through here)."""
    key = (target, name)
    if key not in _originals:
        _originals[key] = getattr(target, name, None)
        _own_attributes[key] = vars(target).get(name, _MISSING)
        _groups.setdefault(group, []).append(key)
    setattr(target, name, value)


def original(target: Any, name: str) -> Any:
    """The attribute as moto defined it, before any patch (as getattr gave it then)."""
    key = (target, name)
    return _originals[key] if key in _originals else getattr(target, name)


def restore(group: str) -> None:
    """Give back everything patched in a group, as it was."""
    for key in reversed(_groups.pop(group, [])):
        target, name = key
        own = _own_attributes.pop(key)
        _originals.pop(key, None)
        if own is _MISSING:
            delattr(target, name)
        else:
            setattr(target, name, own)


Properties = dict[str, Any]
# (resource, new properties, account id, region) -> whether it must be replaced / the updated resource
ReplacementCheck = Callable[[Any, Properties, str, str], bool]
InPlaceUpdate = Callable[[Any, Properties, str, str], Any]
# (model class, physical name, properties, account id, region) -> the new resource
Creation = Callable[[Any, str, Properties, str, str], Any]


def as_classmethod(function: Callable[..., Any]) -> classmethod:  # type: ignore[type-arg]
    return classmethod(function)


def tags_as_dict(tags: Any) -> dict[str, str]:
    """CloudFormation tags (a list of Key/Value, or SAM's map) as a map."""
    if isinstance(tags, dict):
        return {str(key): str(value) for key, value in tags.items()}
    if isinstance(tags, list):
        return {str(tag["Key"]): str(tag["Value"]) for tag in tags if isinstance(tag, dict) and "Key" in tag}
    return {}


def tags_as_list(tags: Any) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags_as_dict(tags).items()]


def environment_text(value: Any) -> str:
    """CloudFormation turns environment variable values into text; true becomes "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def properties_of(cloudformation_json: Mapping[str, Any]) -> Properties:
    return dict(cloudformation_json.get("Properties") or {})


def update_or_replace(
    resource_class: Any,
    original: Any,
    *,
    new_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
    update_in_place: InPlaceUpdate,
    replaced_when: ReplacementCheck | None = None,
) -> Any:
    """Update a resource as CloudFormation does: when a property that cannot change in place changed,
    create the replacement and then delete the original; otherwise update it in place
    (update_in_place returns the updated resource, or None when that is the original itself)."""
    properties = properties_of(cloudformation_json)
    if replaced_when is None or not replaced_when(original, properties, account_id, region_name):
        updated = update_in_place(original, properties, account_id, region_name)
        return original if updated is None else updated
    replacement = resource_class.create_from_cloudformation_json(
        new_name, cloudformation_json, account_id, region_name
    )
    if deletion_policy(cloudformation_json, "UpdateReplacePolicy") != "Retain":
        delete_one(
            original,
            {**cloudformation_json, "Type": resource_class.cloudformation_type()},
            account_id,
            region_name,
        )
    return replacement


def updated_or_replaced(
    update_in_place: InPlaceUpdate, replaced_when: ReplacementCheck | None = None
) -> classmethod:  # type: ignore[type-arg]
    """A patched moto class's update_from_cloudformation_json, from its two halves."""

    def update_from_cloudformation_json(
        cls: Any,
        *,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> Any:
        return update_or_replace(
            cls,
            original_resource,
            new_name=new_resource_name,
            cloudformation_json=cloudformation_json,
            account_id=account_id,
            region_name=region_name,
            update_in_place=update_in_place,
            replaced_when=replaced_when,
        )

    return classmethod(update_from_cloudformation_json)


def created_from_properties(create: Creation) -> classmethod:  # type: ignore[type-arg]
    """A patched moto class's create_from_cloudformation_json, from a function of the resource's Properties."""

    def create_from_cloudformation_json(
        cls: Any,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        return create(cls, resource_name, properties_of(cloudformation_json), account_id, region_name)

    return classmethod(create_from_cloudformation_json)


def cfn_attribute_error() -> Exception:
    return UnformattedGetAttTemplateException()


def get_attribute(resource: Any, attributes: Mapping[str, str], attribute_name: str) -> str:
    """Fn::GetAtt through a map of attribute name -> the instance attribute holding its value."""
    if attribute_name in attributes:
        return str(getattr(resource, attributes[attribute_name]))
    raise cfn_attribute_error()


def patch_attributes(target: Any, attributes: Mapping[str, str]) -> None:
    """Fn::GetAtt of a patched moto class: exactly these attributes (name -> instance attribute)."""
    patch(target, "has_cfn_attr", as_classmethod(lambda cls, attr: attr in attributes))
    patch(target, "get_cfn_attribute", lambda self, name: get_attribute(self, attributes, name))


class LocalModel:
    """What every CloudFormation model defined here shares: its type, name property, Ref and GetAtt.

    A mixin, not a CloudFormationModel: moto finds models through CloudFormationModel.__subclasses__(),
    so each model subclasses CloudFormationModel directly (`class M(LocalModel, CloudFormationModel)`).
    """

    RESOURCE_TYPE: ClassVar[str]
    NAME_PROPERTY: ClassVar[str] = ""  # the property that names the resource, if it has one
    PHYSICAL_ID: ClassVar[str]  # the instance attribute Ref gives
    ATTRIBUTES: ClassVar[Mapping[str, str]] = {}  # Fn::GetAtt name -> instance attribute

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.RESOURCE_TYPE

    @classmethod
    def cloudformation_name_type(cls) -> str:
        return cls.NAME_PROPERTY

    @property
    def physical_resource_id(self) -> str:
        return str(getattr(self, self.PHYSICAL_ID))

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRIBUTES

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return get_attribute(self, self.ATTRIBUTES, attribute_name)

    create_from_cloudformation_json = created_from_properties(lambda cls, *settings: cls._create(*settings))

    @classmethod
    @abstractmethod
    def _create(cls, resource_name: str, properties: Properties, account_id: str, region_name: str) -> Any:
        """Create the resource from its resolved Properties."""


class UpdatableModel(LocalModel):
    """A model updated in place, or replaced when a property that cannot change in place changed."""

    update_from_cloudformation_json = updated_or_replaced(
        update_in_place=lambda model, *changes: model._update_in_place(*changes),
        replaced_when=lambda model, *changes: model._needs_replacement(*changes),
    )

    @abstractmethod
    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        """Whether a property changed that the resource cannot take in place."""

    @abstractmethod
    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        """Give the existing resource its new properties."""


def deletion_policy(resource_json: Mapping[str, Any], key: str = "DeletionPolicy") -> str:
    return str(resource_json.get(key) or "Delete")


def delete_one(resource: Any, resource_json: Mapping[str, Any], account_id: str, region_name: str) -> None:
    """Delete through the model's own delete(), else its delete_from_cloudformation_json."""
    delete = getattr(resource, "delete", None)
    if callable(delete) and len(inspect.signature(delete).parameters) == 2:
        delete(account_id, region_name)
        return
    resource_class = parsing.resource_class_from_type(resource_json["Type"])
    if resource_class is not None and not hasattr(
        resource_class.delete_from_cloudformation_json, "__isabstractmethod__"
    ):
        resource_class.delete_from_cloudformation_json(
            physical_id_of(resource) or "", dict(resource_json), account_id, region_name
        )


def physical_id_of(resource: Any) -> str | None:
    value = getattr(resource, "physical_resource_id", None)
    return value if isinstance(value, str) else None


def camel(value: Any) -> Any:
    """CloudFormation's PascalCase structure keys as the API's camelCase (AllowOrigins -> allowOrigins)."""
    if isinstance(value, dict):
        return {key[:1].lower() + key[1:]: camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def camel_values(mapping: Any) -> dict[str, Any]:
    """A map with user-chosen keys (route keys, parameter names) whose values are structures."""
    return {key: camel(item) for key, item in (mapping or {}).items()}
