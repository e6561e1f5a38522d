"""Provisioned concurrency, as the Lambda API reference and developer guide document it.

Gap: moto 5.2.5 has no provisioned concurrency at all; its server answered the four operations with a 404
HTML page. This module adds them (routes, responses and state), and ``AWS::Lambda::Alias``'s
``ProvisionedConcurrencyConfig`` in CloudFormation (SAM's ``ProvisionedConcurrencyConfig`` with
``AutoPublishAlias`` generates it). Sources, each cited where it applies:

* API reference: PutProvisionedConcurrencyConfig (202, ``Status`` IN_PROGRESS | READY | FAILED),
  GetProvisionedConcurrencyConfig (ProvisionedConcurrencyConfigNotFoundException, 404),
  ListProvisionedConcurrencyConfigs (``MaxItems`` 1 to 50, ``Marker``/``NextMarker``; each item's
  ``FunctionArn`` is "The Amazon Resource Name (ARN) of the alias or version"),
  DeleteProvisionedConcurrencyConfig (204).
* Developer guide, "Configuring provisioned concurrency": "Each version of a function can only have one
  provisioned concurrency configuration. This can be directly on the version itself, or on an alias that
  points to the version. Two aliases can't allocate provisioned concurrency for the same version."; "If you
  change the version that an alias points to, Lambda deallocates the provisioned concurrency from the old
  version and allocates it to the new version."; "Provisioned Concurrency is not supported on the
  unpublished version of the function ($LATEST)."; "Lambda starts allocating provisioned concurrency after
  a minute or two of preparation."
* The exact errors, as the service answers them (recorded against AWS in LocalStack's parity tests, as
  reported publicly): see the messages below.

Status, the least convenient documented behaviour: a new or changed allocation is IN_PROGRESS, with nothing
allocated or available, for :attr:`ProvisionedConcurrency.allocation_seconds` (two minutes) of
:attr:`ProvisionedConcurrency.clock`, then READY with everything requested. Tests replace the clock (any
object with ``now()``, such as ``stepfunctions_executions.ManualClock``) and move it, instead of sleeping.
CloudFormation waits for an alias's allocation before it completes the resource, so an allocation it makes
is READY at once. No execution environment is started for provisioned concurrency: every environment
initializes on demand (``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from typing import Any, Protocol
from urllib.parse import unquote

from moto.awslambda import exceptions as lambda_exceptions
from moto.awslambda import models as lambda_models
from moto.awslambda import urls as lambda_urls
from moto.awslambda.responses import LambdaResponse

from plldb.localcloud.moto_extensions import awslambda_versions
from plldb.localcloud.moto_extensions.awslambda_versions import (
    aliases_of,
    function_reference_arn,
    page_of,
    qualifier_state,
)
from plldb.localcloud.moto_extensions.core import patch

ALLOCATION_SECONDS = 120.0  # "after a minute or two of preparation": the later end
MAX_CONFIGS_PER_PAGE = 50  # ListProvisionedConcurrencyConfigs' MaxItems: "Maximum value of 50"
ROUTE = r"{0}/(?P<api_version>[^/]+)/functions/(?P<function_name>[\w_:%-]+)/provisioned-concurrency/?$"

UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_ALIAS_OR_VERSION = "The function resource provided must be an alias or a published version."
NOT_FOUND = "No Provisioned Concurrency Config found for this function"
VERSION_ALREADY_PROVISIONED = (
    "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version"
)
VERSION_OF_PROVISIONED_ALIAS = "Version is pointed by a Provisioned Concurrency alias"


class ProvisionedConcurrencyConfigNotFoundException(lambda_exceptions.LambdaClientError):
    code = 404

    def __init__(self) -> None:
        super().__init__("ProvisionedConcurrencyConfigNotFoundException", NOT_FOUND)


class ResourceConflictException(lambda_exceptions.LambdaClientError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceConflictException", message)


class Clock(Protocol):
    def now(self) -> datetime.datetime:
        """The current time, timezone-aware."""


class SystemClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)


class ProvisionedConcurrency:
    """How long an allocation takes, by which clock (tests replace both)."""

    def __init__(self) -> None:
        self.clock: Clock = SystemClock()
        self.allocation_seconds = ALLOCATION_SECONDS
        self.lock = threading.RLock()

    def ready_at(self) -> datetime.datetime:
        return self.clock.now() + datetime.timedelta(seconds=self.allocation_seconds)


PROVISIONING = ProvisionedConcurrency()


@dataclasses.dataclass
class ProvisionedConfig:
    requested: int
    last_modified: str
    ready_at: datetime.datetime | None  # None: allocated already (CloudFormation waited for it)

    def view(self) -> dict[str, Any]:
        ready = self.ready_at is None or PROVISIONING.clock.now() >= self.ready_at
        amount = self.requested if ready else 0
        return {
            "RequestedProvisionedConcurrentExecutions": self.requested,
            "AvailableProvisionedConcurrentExecutions": amount,
            "AllocatedProvisionedConcurrentExecutions": amount,
            "Status": "READY" if ready else "IN_PROGRESS",
            "LastModified": self.last_modified,
        }


def configs_of(latest: Any) -> dict[str, ProvisionedConfig]:
    """A function's provisioned concurrency configurations, by alias name or version number."""
    return qualifier_state(latest, "provisioned")


@dataclasses.dataclass
class Target:
    """The alias or version a request names."""

    latest: Any
    qualifier: str
    version: str  # the version itself, or the one the alias points to
    is_alias: bool


def target_of(backend: Any, function_name: str, qualifier: str | None) -> Target:
    """The alias or version, refused as Lambda refuses one that does not exist: a version number with
    "Function not found: ARN", anything else with "Cannot find alias arn: ARN" (even when the function
    itself does not exist)."""
    storage = backend._lambdas
    name, named_qualifier, arn = function_reference_arn(
        function_name, backend.account_id, backend.region_name
    )
    qualifier = qualifier or named_qualifier or ""
    qualified_arn = f"{arn.split(':function:')[0]}:function:{name}:{qualifier}"
    entry = storage._functions.get(name) or {}
    latest = entry.get("latest")
    if qualifier.isdigit():
        if latest is None or storage._get_version(name, qualifier) is None:
            raise lambda_exceptions.UnknownFunctionException(qualified_arn)
        return Target(latest, qualifier, qualifier, is_alias=False)
    alias = aliases_of(storage, name).get(qualifier)
    if latest is None or alias is None:
        raise lambda_exceptions.UnknownAliasException(qualified_arn)
    return Target(latest, qualifier, str(alias.function_version), is_alias=True)


def check_allocation(storage: Any, target: Target, version: str) -> None:
    """Refuse an allocation the version already has (directly or through another alias), or $LATEST's."""
    if version == "$LATEST":
        raise lambda_exceptions.InvalidParameterValueException(UNPUBLISHED)
    configs = configs_of(target.latest)
    aliases = aliases_of(storage, target.latest.function_name)
    provisioned_aliases = [
        name
        for name, alias in aliases.items()
        if name in configs and str(alias.function_version) == version and name != target.qualifier
    ]
    if target.is_alias and (version in configs or provisioned_aliases):
        raise ResourceConflictException(VERSION_ALREADY_PROVISIONED)
    if not target.is_alias and provisioned_aliases:
        raise ResourceConflictException(VERSION_OF_PROVISIONED_ALIAS)


def now_text() -> str:
    return PROVISIONING.clock.now().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# --- The backend's operations (also what CloudFormation calls) ----------------------------------------------
def put_config(
    self: Any, function_name: str, qualifier: str | None, requested: int, allocated: bool = False
) -> dict[str, Any]:
    """PutProvisionedConcurrencyConfig; allocated: CloudFormation waited until the allocation was READY."""
    if qualifier == "$LATEST" or (qualifier is None and function_name.endswith(":$LATEST")):
        raise lambda_exceptions.InvalidParameterValueException(UNPUBLISHED)
    if requested < 1:
        raise lambda_exceptions.ValidationException(
            str(requested),
            "provisionedConcurrentExecutions",
            "Member must have value greater than or equal to 1",
        )
    with PROVISIONING.lock:
        target = target_of(self, function_name, qualifier)
        check_allocation(self._lambdas, target, target.version)
        config = ProvisionedConfig(requested, now_text(), None if allocated else PROVISIONING.ready_at())
        configs_of(target.latest)[target.qualifier] = config
        return config.view()


def get_config(self: Any, function_name: str, qualifier: str | None) -> dict[str, Any]:
    if qualifier == "$LATEST":
        raise lambda_exceptions.InvalidParameterValueException(NOT_ALIAS_OR_VERSION)
    target = target_of(self, function_name, qualifier)
    config = configs_of(target.latest).get(target.qualifier)
    if config is None:
        raise ProvisionedConcurrencyConfigNotFoundException()
    return config.view()


def list_configs(self: Any, function_name: str) -> list[dict[str, Any]]:
    storage = self._lambdas
    name, _, arn = function_reference_arn(function_name, self.account_id, self.region_name)
    latest = (storage._functions.get(name) or {}).get("latest")
    if latest is None:
        raise lambda_exceptions.UnknownFunctionException(f"{arn.split(':function:')[0]}:function:{name}")
    return [
        {"FunctionArn": f"{latest.function_arn}:{qualifier}", **config.view()}
        for qualifier, config in configs_of(latest).items()
    ]


def delete_config(self: Any, function_name: str, qualifier: str | None) -> None:
    """DeleteProvisionedConcurrencyConfig: 204 also when the alias or version has none (as measured)."""
    if qualifier == "$LATEST":
        raise lambda_exceptions.InvalidParameterValueException(NOT_ALIAS_OR_VERSION)
    with PROVISIONING.lock:
        target = target_of(self, function_name, qualifier)
        configs_of(target.latest).pop(target.qualifier, None)


# --- An alias pointed at another version moves its allocation ------------------------------------------------
def update_alias(self: Any, name: str, function_name: str, *settings: Any) -> Any:
    """UpdateAlias of an alias with provisioned concurrency: the new version must be able to take it, and
    the allocation starts anew there ("Lambda deallocates the provisioned concurrency from the old version
    and allocates it to the new version")."""
    new_version = settings[0] if settings else None
    with PROVISIONING.lock:
        function = self.get_function_by_name_or_arn_with_qualifier(function_name)
        config = configs_of(function).get(name)
        alias = aliases_of(self, function.function_name).get(name)
        moves = (
            config is not None
            and alias is not None
            and new_version is not None
            and str(new_version) != str(alias.function_version)
        )
        if moves:
            target = Target(function, name, str(new_version), is_alias=True)
            check_allocation(self, target, str(new_version))
        updated = awslambda_versions.update_alias(self, name, function_name, *settings)
        if moves and config is not None:
            config.ready_at = PROVISIONING.ready_at()
        return updated


# --- The API's responses -----------------------------------------------------------------------------------
def _function_name(response: Any) -> str:
    return unquote(response.path.split("?")[0].rstrip("/").split("/")[-2])


def _qualifier(response: Any) -> str | None:
    return response.querystring.get("Qualifier", [None])[0]


def put_action(self: Any) -> tuple[int, dict[str, Any], str]:
    requested = int(json.loads(self.body or "{}").get("ProvisionedConcurrentExecutions", 0))
    view = self.backend.put_provisioned_concurrency_config(_function_name(self), _qualifier(self), requested)
    return 202, {"status": 202}, json.dumps(view)


def get_action(self: Any) -> tuple[int, dict[str, Any], str]:
    view = self.backend.get_provisioned_concurrency_config(_function_name(self), _qualifier(self))
    return 200, {}, json.dumps(view)


def list_action(self: Any) -> tuple[int, dict[str, Any], str]:
    configs = self.backend.list_provisioned_concurrency_configs(_function_name(self))
    return (
        200,
        {},
        json.dumps(page_of(self.querystring, "ProvisionedConcurrencyConfigs", configs, MAX_CONFIGS_PER_PAGE)),
    )


def delete_action(self: Any) -> tuple[int, dict[str, Any], str]:
    self.backend.delete_provisioned_concurrency_config(_function_name(self), _qualifier(self))
    return 204, {"status": 204}, ""


def install() -> None:
    patch(lambda_urls, "url_paths", {**lambda_urls.url_paths, ROUTE: LambdaResponse.dispatch})
    patch(lambda_models.LambdaBackend, "put_provisioned_concurrency_config", put_config)
    patch(lambda_models.LambdaBackend, "get_provisioned_concurrency_config", get_config)
    patch(lambda_models.LambdaBackend, "list_provisioned_concurrency_configs", list_configs)
    patch(lambda_models.LambdaBackend, "delete_provisioned_concurrency_config", delete_config)
    patch(lambda_models.LambdaStorage, "update_alias", update_alias)
    patch(LambdaResponse, "put_provisioned_concurrency_config", put_action)
    patch(LambdaResponse, "get_provisioned_concurrency_config", get_action)
    patch(LambdaResponse, "list_provisioned_concurrency_configs", list_action)
    patch(LambdaResponse, "delete_provisioned_concurrency_config", delete_action)
