"""Lambda as CloudFormation manages it (functions, layers, permissions, versions, aliases) and RevisionId."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from moto.awslambda import exceptions as lambda_exceptions
from moto.awslambda import models as lambda_models
from moto.core.common_models import CloudFormationModel

from plldb.localcloud.moto_extensions.core import (
    Properties,
    UpdatableModel,
    camel,
    created_from_properties,
    environment_text,
    original,
    patch,
    patch_attributes,
    tags_as_dict,
    updated_or_replaced,
)

LOG = logging.getLogger(__name__)

FUNCTION_PROPERTIES = (
    "Architectures",
    "CodeSigningConfigArn",
    "DeadLetterConfig",
    "Description",
    "EphemeralStorage",
    "FileSystemConfigs",
    "ImageConfig",
    "KmsKeyArn",
    "Layers",
    "LoggingConfig",
    "MemorySize",
    "PackageType",
    "ReservedConcurrentExecutions",
    "Timeout",
    "TracingConfig",
    "VpcConfig",
)


def function_spec(properties: Mapping[str, Any], function_name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "Code": dict(properties.get("Code") or {}),
        "FunctionName": function_name,
        "Handler": properties.get("Handler"),
        "Role": properties["Role"],
        "Runtime": properties.get("Runtime"),
        "Tags": tags_as_dict(properties.get("Tags")),
    }
    for name in FUNCTION_PROPERTIES:
        if name in properties:
            spec[name] = properties[name]
    variables = (properties.get("Environment") or {}).get("Variables")
    if variables:
        spec["Environment"] = {
            "Variables": {key: environment_text(value) for key, value in variables.items()}
        }
    if "ZipFile" in spec["Code"]:
        spec["Code"]["ZipFile"] = plain_code_zip(spec["Code"]["ZipFile"])
    return spec


def plain_code_zip(code: str) -> bytes:
    return base64.b64encode(lambda_models.LambdaFunction._create_zipfile_from_plaintext_code(code))


# --- LoggingConfig ------------------------------------------------------------------------------------------
# Gap: moto dropped a function's LoggingConfig, so every function logged to /aws/lambda/<name> in Text.
# Lambda API reference, LoggingConfig: LogGroup "By default, Lambda functions send logs to a default log
# group named /aws/lambda/<function name>"; LogFormat Text (the default) or JSON; the log levels filter
# JSON logs only, and default to INFO ("Log-level filtering", Lambda developer guide).
DEFAULT_LOG_LEVEL = "INFO"


def logging_config(function: Any) -> dict[str, str]:
    """The function's effective LoggingConfig, as GetFunctionConfiguration returns it."""
    configured = getattr(function, "plldb_logging_config", None) or {}
    effective = {
        "LogFormat": str(configured.get("LogFormat") or "Text"),
        "LogGroup": str(configured.get("LogGroup") or f"/aws/lambda/{function.function_name}"),
    }
    if effective["LogFormat"] == "JSON":
        effective["ApplicationLogLevel"] = str(configured.get("ApplicationLogLevel") or DEFAULT_LOG_LEVEL)
        effective["SystemLogLevel"] = str(configured.get("SystemLogLevel") or DEFAULT_LOG_LEVEL)
    return effective


def function_init(function: Any, account_id: str, spec: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    original(lambda_models.LambdaFunction, "__init__")(function, account_id, spec, *args, **kwargs)
    function.plldb_logging_config = dict(spec.get("LoggingConfig") or {})


# --- Updates of $LATEST --------------------------------------------------------------------------------------
# Observers of every applied configuration or code update of a function's $LATEST: (account id, region,
# function name). The local cloud retires the environments of the configuration it replaced, as Lambda
# runs later invocations in environments of the new one.
UpdateListener = Callable[[str, str, str], None]
UPDATE_LISTENERS: list[UpdateListener] = []


def _updated(function: Any) -> None:
    new_revision(function)
    for listener in list(UPDATE_LISTENERS):
        listener(function.account_id, function.region, function.function_name)


# --- RevisionId -------------------------------------------------------------------------------------------
# Gap: moto's functions have no RevisionId and ignore the RevisionId of an update, so Lambda's optimistic
# locking (PreconditionFailedException when the function changed since it was read) could not be
# exercised. Every function now has a revision, every configuration or code update takes a new one, and an
# update naming another revision is refused as Lambda refuses it.
def get_configuration(function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    configuration = original(lambda_models.LambdaFunction, "get_configuration")(function, *args, **kwargs)
    return dict(configuration, RevisionId=revision_of(function), LoggingConfig=logging_config(function))


def update_configuration(function: Any, changes: dict[str, Any]) -> Any:
    """UpdateFunctionConfiguration, all or nothing.

    Gap: moto applied the request's fields one by one, so a request naming a layer version that does not
    exist changed the fields before ``Layers`` (its Environment, say) and then failed. Lambda validates the
    whole request first: a refused update changes nothing (its RevisionId included). Everything that can
    refuse it is checked here before any field is applied.

    Gap: ``Environment`` without ``Variables`` failed with HTTP 500. Lambda accepts it and keeps the
    function's variables (only ``{"Variables": {}}`` removes them), as measured against the service.
    """
    check_revision(function, changes)
    if "Layers" in changes:
        function._get_layers_data(changes["Layers"])  # refuses a layer version that does not exist
    environment = changes.get("Environment")
    if isinstance(environment, dict) and "Variables" not in environment:
        changes = {key: value for key, value in changes.items() if key != "Environment"}
    if isinstance(changes.get("LoggingConfig"), dict):
        # A LoggingConfig replaces the function's (what it leaves out goes back to its default).
        function.plldb_logging_config = dict(changes["LoggingConfig"])
    original(lambda_models.LambdaFunction, "update_configuration")(function, changes)
    _updated(function)
    return function.get_configuration()


def update_function_code(function: Any, changes: dict[str, Any]) -> Any:
    check_revision(function, changes)
    original(lambda_models.LambdaFunction, "update_function_code")(function, changes)
    if not changes.get("DryRun"):  # UpdateFunctionCode's dry run changes nothing
        _updated(function)
    return function.get_configuration()


def check_revision(function: Any, changes: dict[str, Any]) -> None:
    expected = changes.get("RevisionId")
    if expected is not None and expected != revision_of(function):
        raise lambda_exceptions.PreconditionFailedException(
            "The Revision Id provided does not match the latest Revision Id. "
            "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
        )


# --- Layers a function names ---------------------------------------------------------------------------------
# Gap: a layer version that does not exist was ResourceNotFoundException (404) "One or more LayerVersion does
# not exist [...]". Lambda refuses the function's configuration with InvalidParameterValueException (400)
# "Layer version ARN does not exist." (CreateFunction, UpdateFunctionConfiguration).
def layers_data(function: Any, layer_version_arns: list[str]) -> list[dict[str, Any]]:
    layers = []
    for arn in layer_version_arns:
        try:
            layers.extend(original(lambda_models.LambdaFunction, "_get_layers_data")(function, [arn]))
        except lambda_exceptions.UnknownLayerVersionException:
            raise lambda_exceptions.InvalidParameterValueException(f"Layer version {arn} does not exist.")
    return layers


def revision_of(function: Any) -> str:
    revision = getattr(function, "plldb_revision_id", None)
    return str(revision) if revision else new_revision(function)


def new_revision(function: Any) -> str:
    function.plldb_revision_id = str(lambda_models.random.uuid4())
    return str(function.plldb_revision_id)


# --- AWS::Lambda::Function: Layers, Architectures, Tags... were dropped; updates could not remove them. ------
def function_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    spec = function_spec(properties, properties.get("FunctionName") or resource_name)
    return lambda_models.lambda_backends[account_id][region_name].create_function(spec)


def function_renamed(function: Any, properties: Properties, account_id: str, region_name: str) -> bool:
    return bool((properties.get("FunctionName") or function.function_name) != function.function_name)


def function_update(function: Any, properties: Properties, account_id: str, region_name: str) -> Any:
    spec = function_spec(properties, function.function_name)
    # Properties left out of the template go back to Lambda's defaults, as on AWS.
    layers = function._get_layers_data(spec.get("Layers", []))  # validates before anything changes
    function.architectures = spec.get("Architectures", ["x86_64"])
    function.layers = layers
    function.handler = spec["Handler"]
    function.role = spec["Role"]
    function.run_time = spec["Runtime"]
    function.description = spec.get("Description", "")
    function.memory_size = spec.get("MemorySize", 128)
    function.timeout = spec.get("Timeout", 3)
    function._vpc_config = spec.get("VpcConfig")
    function.environment_vars = (spec.get("Environment") or {}).get("Variables", {})
    function.ephemeral_storage = (spec.get("EphemeralStorage") or {}).get("Size", 512)
    function.tracing_config = spec.get("TracingConfig") or {"Mode": "PassThrough"}
    function.reserved_concurrency = spec.get("ReservedConcurrentExecutions")
    function.kms_key_arn = spec.get("KmsKeyArn")
    function.plldb_logging_config = dict(spec.get("LoggingConfig") or {})
    function.tags = spec["Tags"]
    previous_code = (getattr(function, "plldb_properties", None) or {}).get("Code")
    if spec["Code"] and spec["Code"] != previous_code:
        function.update_function_code(spec["Code"])
    function.last_modified = lambda_models.iso_8601_datetime_with_nanoseconds()
    function.code_or_config_updated = True
    new_revision(function)
    return function


# --- AWS::Lambda::LayerVersion: Ref gave the object's repr, LayerName was ignored, deletes left it behind. ---
def layer_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    spec = {"Content": properties["Content"], "LayerName": properties.get("LayerName") or resource_name}
    for name in ("Description", "CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
        if name in properties:
            spec[name] = properties[name]
    return lambda_models.lambda_backends[account_id][region_name].publish_layer_version(spec)


def layer_delete(self: Any, account_id: str, region_name: str) -> None:
    lambda_models.lambda_backends[account_id][region_name].delete_layer_version(self.name, self.version)


# --- AWS::Lambda::Permission: the statement had no id, the resource no physical id, deletes kept it. --------
def permission_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    function_name, qualifier = split_function_reference(properties["FunctionName"])
    backend: Any = lambda_models.lambda_backends[account_id][region_name]  # add_permission is patched
    function = backend.get_function(function_name)
    statement = {
        "StatementId": resource_name,
        "Action": properties["Action"],
        "Principal": properties["Principal"],
    }
    for name in (
        "SourceArn",
        "SourceAccount",
        "EventSourceToken",
        "PrincipalOrgID",
        "FunctionUrlAuthType",
    ):
        if name in properties:
            statement[name] = properties[name]
    # The policy of the function, version or alias the FunctionName designates (each has its own).
    backend.add_permission(function.function_name, qualifier, json.dumps(statement))
    permission = cls(region=region_name)
    permission.statement_id = resource_name
    permission.function_name = function.function_name
    permission.qualifier = qualifier
    permission.account_id = account_id
    return permission


def permission_delete(self: Any, account_id: str, region_name: str) -> None:
    backend: Any = lambda_models.lambda_backends[account_id][region_name]  # remove_permission is patched
    try:
        backend.remove_permission(
            self.function_name, self.statement_id, qualifier=getattr(self, "qualifier", None)
        )
    except Exception as exc:
        # The function may already be gone, which takes its policy with it.
        LOG.debug("permission %s of %s was already gone: %s", self.statement_id, self.function_name, exc)


# --- AWS::Lambda::Version (AutoPublishAlias): Ref gave the logical id, GetAtt Version failed. --------------
def version_create(
    cls: Any, resource_name: str, properties: Properties, account_id: str, region_name: str
) -> Any:
    backend = lambda_models.lambda_backends[account_id][region_name]
    function_name, _ = split_function_reference(properties["FunctionName"])
    function = backend.get_function(function_name)
    function.code_or_config_updated = True
    published = backend.publish_version(function.function_name, properties.get("Description", ""))
    if published is None:
        raise ValueError("InvalidParameterValueException", f"could not publish a version of {function_name}")
    version = cls({"Version": str(published.version)})
    version.function_name = function.function_name
    version.arn = f"{function.function_arn}:{published.version}"
    return version


def version_delete(self: Any, account_id: str, region_name: str) -> None:
    backend = lambda_models.lambda_backends[account_id][region_name]
    try:
        backend.get_function(self.function_name)
    except lambda_exceptions.UnknownFunctionException:
        return  # a replaced or deleted function took its versions with it
    backend.delete_function(self.function_name, str(self.version))


# Updates could not change a version at all (a renamed function left the stack UPDATE_ROLLBACK_FAILED).
# SAM names a version after its code and description, so only a new function reaches an update:
# the version is then published anew on it.
def version_replaced(version: Any, properties: Properties, account_id: str, region_name: str) -> bool:
    function_name, _ = split_function_reference(properties["FunctionName"])
    function = lambda_models.lambda_backends[account_id][region_name].get_function(function_name)
    return bool(function.function_name != version.function_name)


def split_function_reference(reference: str) -> tuple[str, str | None]:
    """(function name or unqualified ARN, qualifier) of a FunctionName property."""
    parts = reference.split(":")
    if reference.startswith("arn:") and len(parts) == 8:
        return ":".join(parts[:7]), parts[7]
    if not reference.startswith("arn:") and len(parts) == 2:
        return parts[0], parts[1]
    return reference, None


class FunctionAlias(UpdatableModel, CloudFormationModel):
    """AWS::Lambda::Alias (SAM's AutoPublishAlias). Ref = the alias ARN.

    ``ProvisionedConcurrencyConfig`` ("Update requires: No interruption") is put on the alias once it points
    at its version, changed in place, and deleted when the template drops it; CloudFormation completes the
    resource once the allocation is ready, so it is READY when the stack operation ends.
    """

    RESOURCE_TYPE = "AWS::Lambda::Alias"
    PHYSICAL_ID = "arn"
    ATTRIBUTES = {"AliasArn": "arn"}

    def __init__(self, function_name: str, name: str, arn: str) -> None:
        self.function_name = function_name
        self.name = name
        self.arn = arn

    @staticmethod
    def _settings(properties: Properties) -> dict[str, Any]:
        """The keyword arguments CreateAlias and UpdateAlias share."""
        return {
            "function_version": str(properties["FunctionVersion"]),
            "description": properties.get("Description", ""),
            "routing_config": camel(properties.get("RoutingConfig")),
        }

    @staticmethod
    def _function(properties: Properties, account_id: str, region_name: str) -> Any:
        function_name, _ = split_function_reference(properties["FunctionName"])
        return lambda_models.lambda_backends[account_id][region_name].get_function(function_name)

    @classmethod
    def _create(
        cls, resource_name: str, properties: Properties, account_id: str, region_name: str
    ) -> FunctionAlias:
        function = cls._function(properties, account_id, region_name)
        backend: Any = lambda_models.lambda_backends[account_id][region_name]
        alias = backend.create_alias(
            name=properties["Name"], function_name=function.function_name, **cls._settings(properties)
        )
        created = cls(function.function_name, properties["Name"], alias.arn)
        created._provision(properties, backend)
        return created

    def _needs_replacement(self, properties: Properties, account_id: str, region_name: str) -> bool:
        if properties["Name"] != self.name:
            return True
        return bool(self._function(properties, account_id, region_name).function_name != self.function_name)

    def _update_in_place(self, properties: Properties, account_id: str, region_name: str) -> None:
        backend: Any = lambda_models.lambda_backends[account_id][region_name]
        backend.update_alias(name=self.name, function_name=self.function_name, **self._settings(properties))
        self._provision(properties, backend)

    def _provision(self, properties: Properties, backend: Any) -> None:
        """The alias's ProvisionedConcurrencyConfig, allocated as CloudFormation waits for it (or removed)."""
        config = properties.get("ProvisionedConcurrencyConfig")
        if config:
            backend.put_provisioned_concurrency_config(
                self.function_name, self.name, int(config["ProvisionedConcurrentExecutions"]), allocated=True
            )
        else:
            backend.delete_provisioned_concurrency_config(self.function_name, self.name)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = lambda_models.lambda_backends[account_id][region_name]
        try:
            backend.get_function(self.function_name)
        except lambda_exceptions.UnknownFunctionException:
            return  # a replaced or deleted function took its aliases with it
        backend.delete_alias(self.name, self.function_name)


def install() -> None:
    """Gap 2 and friends: layers, permissions, versions and functions as CloudFormation manages them."""
    LambdaFunction = lambda_models.LambdaFunction
    LayerVersion = lambda_models.LayerVersion
    Permission = lambda_models.Permission
    LambdaVersion = lambda_models.LambdaVersion
    patch(LambdaFunction, "create_from_cloudformation_json", created_from_properties(function_create))
    patch(
        LambdaFunction,
        "update_from_cloudformation_json",
        updated_or_replaced(function_update, function_renamed),
    )
    patch(LayerVersion, "create_from_cloudformation_json", created_from_properties(layer_create))
    patch(LayerVersion, "physical_resource_id", property(lambda self: self.arn))
    patch(LayerVersion, "delete", layer_delete)
    patch_attributes(LayerVersion, {"LayerVersionArn": "arn"})
    patch(Permission, "create_from_cloudformation_json", created_from_properties(permission_create))
    patch(Permission, "physical_resource_id", property(lambda self: self.statement_id))
    patch(Permission, "delete", permission_delete)
    patch(LambdaVersion, "create_from_cloudformation_json", created_from_properties(version_create))
    patch(
        LambdaVersion,
        "update_from_cloudformation_json",
        updated_or_replaced(lambda *_: None, version_replaced),
    )
    patch(LambdaVersion, "physical_resource_id", property(lambda self: self.arn))
    patch_attributes(LambdaVersion, {"Version": "version"})
    patch(LambdaVersion, "delete", version_delete)
    patch(LambdaFunction, "__init__", function_init)
    patch(LambdaFunction, "get_configuration", get_configuration)
    patch(LambdaFunction, "update_configuration", update_configuration)
    patch(LambdaFunction, "update_function_code", update_function_code)
    patch(LambdaFunction, "_get_layers_data", layers_data)
