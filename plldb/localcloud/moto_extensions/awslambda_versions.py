"""Lambda versions and aliases as the Lambda API reference describes them.

Gaps closed here (moto 5.2.5):

* PublishVersion shared $LATEST's RevisionId and its code record with the version; a version now has
  its own RevisionId and keeps the code it was published with.
* DeleteFunction with ``Qualifier=$LATEST`` deleted the whole function; Lambda refuses it
  (InvalidParameterValueException). A version that an alias references (as its FunctionVersion or in
  its RoutingConfig) was deleted; Lambda refuses it with ResourceConflictException (409) "Unable to
  delete version because the following aliases reference it: [...]" (API reference, DeleteFunction:
  "You can't delete a version that an alias references."). A version that does not exist: Lambda
  answers 204 and deletes nothing (measured against the service, as reported publicly), moto 404.
* UpdateAlias kept the alias's RevisionId; every update renews it.

Observers registered in :data:`DELETION_LISTENERS` hear of every deleted function or version (the
local cloud retires their execution environments).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from moto.awslambda import exceptions as lambda_exceptions
from moto.awslambda import models as lambda_models

from plldb.localcloud.moto_extensions.awslambda import new_revision
from plldb.localcloud.moto_extensions.core import original, patch

# (account id, region, function name, version or None for the whole function)
DeletionListener = Callable[[str, str, str, "str | None"], None]
DELETION_LISTENERS: list[DeletionListener] = []


class ResourceConflictException(lambda_exceptions.LambdaClientError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceConflictException", message)


def split_qualifier(function_name: str, qualifier: str | None) -> tuple[str, str | None]:
    """(function name, qualifier) of a FunctionName (name, name:qualifier, or ARN) and Qualifier."""
    name = function_name
    if re.match(r"^arn:[^:]+:lambda:", name):
        parts = name.split(":")
        name = parts[6]
        if len(parts) == 8:
            qualifier = qualifier or parts[7]
    elif ":" in name:
        name, qualifier = name.split(":", 1)
    return name, qualifier


def aliases_of(storage: Any, function_name: str) -> dict[str, Any]:
    """The function's aliases by name (empty when it has none)."""
    latest = storage._functions.get(function_name, {}).get("latest")
    if latest is None:
        return {}
    return dict(storage._aliases.get(latest.function_arn, {}))


def routing_weights(alias: Any) -> dict[str, float]:
    """An alias's AdditionalVersionWeights (version -> weight), whatever shape moto stored them in."""
    config = alias.routing_config or {}
    weights = config.get("AdditionalVersionWeights") or config.get("additionalVersionWeights") or {}
    return {str(version): float(weight) for version, weight in weights.items()}


def publish_version(self: Any, name_or_arn: str, description: str = "") -> Any:
    versions_before = None
    try:
        function = self.get_function_by_name_or_arn_forbid_qualifier(name_or_arn)
        versions_before = len(self._functions[function.function_name]["versions"])
    except Exception:
        pass  # the original raises the error Lambda gives
    version = original(lambda_models.LambdaStorage, "publish_version")(self, name_or_arn, description)
    if (
        version is not None
        and versions_before is not None
        and len(self._functions[version.function_name]["versions"]) > versions_before
    ):
        version.code = dict(version.code)  # $LATEST's later code updates are not this version's
        new_revision(version)
    return version


def delete_function(self: Any, function_name: str, qualifier: str | None = None) -> None:
    name, version = split_qualifier(function_name, qualifier)
    storage = self._lambdas
    if version == "$LATEST":
        raise lambda_exceptions.InvalidParameterValueException(
            "$LATEST version cannot be deleted without deleting the function."
        )
    if version is not None:
        if name not in storage._functions:
            raise storage.construct_unknown_function_exception(name, version)
        if storage._get_version(name, version) is None:
            return  # Lambda answers 204 and deletes nothing
        referencing = sorted(
            alias_name
            for alias_name, alias in aliases_of(storage, name).items()
            if str(alias.function_version) == version or version in routing_weights(alias)
        )
        if referencing:
            raise ResourceConflictException(
                f"Unable to delete version because the following aliases reference it: [{', '.join(referencing)}]"
            )
    original(lambda_models.LambdaBackend, "delete_function")(self, function_name, qualifier)
    for listener in list(DELETION_LISTENERS):
        listener(self.account_id, self.region_name, name, version)


def routing_versions(routing_config: Any) -> list[str]:
    """The versions a RoutingConfig sends part of the traffic to."""
    config = routing_config or {}
    weights = config.get("AdditionalVersionWeights") or config.get("additionalVersionWeights") or {}
    return [str(version) for version in weights]


def update_alias(self: Any, name: str, function_name: str, *settings: Any) -> Any:
    """settings: function version, description, routing config (moto's positional arguments)."""
    for version in routing_versions(settings[2] if len(settings) > 2 else None):
        self.get_function_by_name_or_arn_with_qualifier(function_name, version)  # it must exist
    alias = original(lambda_models.LambdaStorage, "update_alias")(self, name, function_name, *settings)
    alias.revision_id = str(lambda_models.random.uuid4())
    return alias


def put_alias(self: Any, name: str, function_name: str, *settings: Any) -> Any:
    for version in routing_versions(settings[2] if len(settings) > 2 else None):
        self.get_function_by_name_or_arn_with_qualifier(function_name, version)  # it must exist
    return original(lambda_models.LambdaStorage, "put_alias")(self, name, function_name, *settings)


def install() -> None:
    patch(lambda_models.LambdaStorage, "publish_version", publish_version)
    patch(lambda_models.LambdaStorage, "update_alias", update_alias)
    patch(lambda_models.LambdaStorage, "put_alias", put_alias)
    patch(lambda_models.LambdaBackend, "delete_function", delete_function)
