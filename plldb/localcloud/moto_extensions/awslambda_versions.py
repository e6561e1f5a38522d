"""Lambda versions and aliases as the Lambda API reference describes them.

Gaps closed here (moto 5.2.5):

* PublishVersion shared $LATEST's RevisionId and its code record with the version; a version now has
  its own RevisionId and keeps the code it was published with. moto numbered a new version after the
  count of versions left, so after a deletion it published a second version under an existing number
  (and aliases naming it ran the old one); Lambda numbers versions in sequence, each number used once
  (API reference, PublishVersion: "Creates a version from the current code and configuration";
  developer guide, "Manage Lambda function versions": a published version is immutable, which a
  reused number would break for every alias and caller naming it).
* DeleteFunction with ``Qualifier=$LATEST`` deleted the whole function; Lambda refuses it
  (InvalidParameterValueException). A version that an alias references (as its FunctionVersion or in
  its RoutingConfig) was deleted; Lambda refuses it with ResourceConflictException (409) "Unable to
  delete version because the following aliases reference it: [...]" (API reference, DeleteFunction:
  "You can't delete a version that an alias references."). A version that does not exist: Lambda
  answers 204 and deletes nothing (measured against the service, as reported publicly), moto 404.
* UpdateAlias kept the alias's RevisionId; every update renews it.
* PublishVersion ignored its ``RevisionId``; Lambda publishes "only if the revision ID matches the ID
  that's specified" and refuses otherwise with PreconditionFailedException (API reference,
  PublishVersion), so two developers re-publishing a function's list at once cannot lose an update.
* Resource policies: moto kept one policy per function, shared by $LATEST, every version and every alias,
  so GetPolicy with a Qualifier answered every statement of the function and RemovePermission ignored its
  Qualifier. Lambda keeps a policy per qualified ARN (API reference, GetPolicy, Qualifier: "this API will
  return all permissions associated with the specific qualified ARN. If you don't provide this parameter,
  the API will return permissions that apply to the unqualified function ARN"); a new version starts
  without one, and deleting a version or an alias deletes its policy.
* Event source mappings: a mapping created for an alias recorded the version the alias pointed to as its
  FunctionArn (and kept delivering to that version after the alias moved); Lambda keeps the qualified ARN
  the mapping was created with (API reference, CreateEventSourceMapping, FunctionName: "Version or Alias
  ARN"). ListEventSourceMappings filtered on the FunctionName text the mapping was created with, so a
  function named by its ARN, or an alias by its ARN, found nothing; it now lists the mappings of exactly
  the function, version or alias FunctionName designates (any of the documented name formats), all of the
  account's mappings without it, at most 100 a page with ``NextMarker`` ("ListEventSourceMappings returns a
  maximum of 100 items in each response, even if you set the number higher"), and a FunctionName that
  designates nothing is ResourceNotFoundException.

Observers registered in :data:`DELETION_LISTENERS` hear of every deleted function or version (the
local cloud retires their execution environments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from moto.awslambda import exceptions as lambda_exceptions
from moto.awslambda import models as lambda_models
from moto.awslambda.policy import Policy
from moto.awslambda.responses import LambdaResponse

from plldb.localcloud.moto_extensions.awslambda import check_revision, new_revision
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
        _number_in_sequence(self, version)
        new_revision(version)
    return version


def _number_in_sequence(storage: Any, version: Any) -> None:
    """Give a just-published version the number after the highest ever published for its function."""
    latest = storage._functions[version.function_name]["latest"]
    others = [
        int(v.version) for v in storage._functions[version.function_name]["versions"] if v is not version
    ]
    number = max([getattr(latest, "plldb_last_version", 0), *others]) + 1
    latest.plldb_last_version = number
    if int(version.version) != number:
        if storage._arns.get(version.function_arn) is version:
            del storage._arns[version.function_arn]
        version.set_version(number)
        storage._arns[version.function_arn] = version


def publish_version_action(self: Any) -> Any:
    """PublishVersion with its RevisionId precondition, checked against $LATEST before publishing."""
    revision = self._get_param("RevisionId")
    if revision is not None:
        function_name = unquote(self.path.split("/")[-2])
        function = self.backend.get_function(function_name)
        check_revision(function, {"RevisionId": revision})
    return original(LambdaResponse, "publish_version")(self)


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
    if version is not None:
        forget_qualifier(storage, name, version)
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


# --- Resource policies: one per function, per version and per alias ----------------------------------------
def qualifier_policy(storage: Any, function_name: str, qualifier: str | None) -> Any:
    """The resource policy of a function ($LATEST), version or alias; an unknown one is refused as Lambda
    refuses it (ResourceNotFoundException naming the qualified ARN)."""
    name, qualifier = split_qualifier(function_name, qualifier)
    target = storage.get_function_by_name_or_arn_with_qualifier(name, qualifier)  # it must exist
    latest = storage._functions[target.function_name]["latest"]
    if qualifier is None or qualifier == "$LATEST":
        return latest.policy
    policies = qualifier_state(latest, "policies")
    if qualifier not in policies:
        policies[qualifier] = Policy(latest)  # its statements name the qualified ARN
    return policies[qualifier]


QUALIFIER_STATES = ("policies", "provisioned")  # what a version or an alias has of its own


def qualifier_state(latest: Any, kind: str) -> dict[str, Any]:
    """A function's versions' and aliases' own state of one kind, by qualifier (kept on its $LATEST, so it
    goes when the function goes)."""
    state: dict[str, Any] = latest.__dict__.setdefault(f"plldb_{kind}", {})
    return state


def forget_qualifier(storage: Any, function_name: str, qualifier: str) -> None:
    """A deleted version or alias takes what it has of its own with it (its policy, its provisioned
    concurrency)."""
    latest = storage._functions.get(function_name, {}).get("latest")
    if latest is not None:
        for kind in QUALIFIER_STATES:
            qualifier_state(latest, kind).pop(qualifier, None)


def add_permission(self: Any, function_name: str, qualifier: str | None, raw: str) -> Any:
    _, qualifier = split_qualifier(function_name, qualifier)
    policy = qualifier_policy(self._lambdas, function_name, qualifier)
    statement, _ = policy.add_statement(raw, None if qualifier == "$LATEST" else qualifier)
    return statement


def get_policy(self: Any, function_name: str, qualifier: str | None = None) -> str:
    return str(qualifier_policy(self._lambdas, function_name, qualifier).wire_format())


def remove_permission(
    self: Any, function_name: str, sid: str, revision: str = "", qualifier: str | None = None
) -> None:
    qualifier_policy(self._lambdas, function_name, qualifier).del_statement(sid, revision)


def remove_permission_action(self: Any) -> tuple[int, dict[str, Any], str]:
    """moto's RemovePermission response ignored the Qualifier (and compared the RevisionId as a list)."""
    function_name = unquote(self.path.split("/")[-3])
    statement_id = self.path.split("/")[-1].split("?")[0]
    revision = self.querystring.get("RevisionId", [""])[0]
    qualifier = self.querystring.get("Qualifier", [None])[0]
    self.backend.remove_permission(function_name, statement_id, revision, qualifier=qualifier)
    return 204, {"status": 204}, "{}"


def delete_alias(self: Any, name: str, function_name: str) -> None:
    original(lambda_models.LambdaStorage, "delete_alias")(self, name, function_name)
    function = self.get_function_by_name_or_arn_with_qualifier(function_name)
    forget_qualifier(self, function.function_name, name)


# --- Event source mappings of functions, versions and aliases ----------------------------------------------
# The FunctionName formats of the API reference: name, ARN, version or alias ARN, partial ARN, name:qualifier.
FUNCTION_REFERENCE = re.compile(
    r"^(?:arn:(?P<partition>aws[a-zA-Z-]*)?:lambda:)?(?:(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?(?:function:)?(?P<name>[a-zA-Z0-9-_]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?$"
)
MAPPINGS_PER_PAGE = 100


def function_reference_arn(reference: str, account_id: str, region: str) -> tuple[str, str | None, str]:
    """(name, qualifier, the ARN it designates) of a FunctionName; $LATEST designates the unqualified ARN."""
    match = FUNCTION_REFERENCE.match(reference)
    if match is None:
        name, qualifier = split_qualifier(reference, None)
        partition, account, region_of = "aws", account_id, region
    else:
        name, qualifier = match["name"], match["qualifier"]
        partition = match["partition"] or "aws"
        account, region_of = match["account"] or account_id, match["region"] or region
    arn = f"arn:{partition}:lambda:{region_of}:{account}:function:{name}"
    if qualifier is not None and qualifier != "$LATEST":
        arn = f"{arn}:{qualifier}"
    return name, qualifier, arn


def redirect_deliveries(mapping: Any, old_arn: str, new_arn: str) -> None:
    """moto's queues and tables deliver to the function ARN they file the mapping under: refile it."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.sqs.models import sqs_backends

    holders: list[dict[str, Any]] = [
        queue.lambda_event_source_mappings
        for queue in sqs_backends[mapping.account_id][mapping.region].queues.values()
    ]
    holders += [
        table.lambda_event_source_mappings
        for table in dynamodb_backends[mapping.account_id][mapping.region].tables.values()
    ]
    for held in holders:
        if held.get(old_arn) is mapping:
            del held[old_arn]
            held[new_arn] = mapping


def record_function(self: Any, mapping: Any, function_name: str) -> None:
    """The mapping's FunctionArn is the function, version or alias its FunctionName designates."""
    name, qualifier, arn = function_reference_arn(function_name, self.account_id, self.region_name)
    self._lambdas.get_function_by_name_or_arn_with_qualifier(name, qualifier)  # it must exist
    if mapping.function_arn != arn:
        redirect_deliveries(mapping, mapping.function_arn, arn)
        mapping.function_arn = arn


def with_function_arn(self: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its FunctionName as a full ARN (moto read neither partial ARNs nor qualified names)."""
    if not spec.get("FunctionName"):
        return spec
    _, _, arn = function_reference_arn(str(spec["FunctionName"]), self.account_id, self.region_name)
    return {**spec, "FunctionName": arn}


def create_event_source_mapping(self: Any, spec: dict[str, Any]) -> Any:
    spec = with_function_arn(self, spec)
    mapping = original(lambda_models.LambdaBackend, "create_event_source_mapping")(self, spec)
    record_function(self, mapping, spec["FunctionName"])
    return mapping


def update_event_source_mapping(self: Any, uuid: str, spec: dict[str, Any]) -> Any:
    spec = with_function_arn(self, spec)
    mapping = self.get_event_source_mapping(uuid)
    before = mapping.function_arn if mapping is not None else None
    updated = original(lambda_models.LambdaBackend, "update_event_source_mapping")(self, uuid, spec)
    if updated is not None and spec.get("FunctionName"):
        if before is not None and updated.function_arn != before:
            redirect_deliveries(updated, before, updated.function_arn)  # moto did not refile it
        record_function(self, updated, spec["FunctionName"])
    return updated


def list_event_source_mappings(
    self: Any, event_source_arn: str | None, function_name: str | None
) -> list[Any]:
    """The mappings of exactly the function, version or alias function_name designates (all without it)."""
    mappings = list(self._event_source_mappings.values())
    if event_source_arn:
        mappings = [m for m in mappings if m.event_source_arn == event_source_arn]
    if function_name:
        _, _, arn = function_reference_arn(function_name, self.account_id, self.region_name)
        mappings = [m for m in mappings if m.function_arn == arn]
    return mappings


def list_event_source_mappings_action(self: Any) -> str:
    """ListEventSourceMappings: a FunctionName must designate a function, version or alias; pages of 100."""
    event_source_arn = self.querystring.get("EventSourceArn", [None])[0]
    function_name = self.querystring.get("FunctionName", [None])[0]
    if function_name:
        name, qualifier, _ = function_reference_arn(function_name, self.current_account, self.region)
        self.backend._lambdas.get_function_by_name_or_arn_with_qualifier(name, qualifier)  # it must exist
    mappings = self.backend.list_event_source_mappings(event_source_arn, function_name)
    return json.dumps(
        page_of(
            self.querystring,
            "EventSourceMappings",
            [m.get_configuration() for m in mappings],
            MAPPINGS_PER_PAGE,
        )
    )


def page_of(querystring: dict[str, list[str]], key: str, items: list[Any], most: int) -> dict[str, Any]:
    """One page of a list operation: at most ``most`` items from ``Marker`` (an opaque position), whatever
    ``MaxItems`` asks for beyond that, and ``NextMarker`` when items remain."""
    try:
        start = int(querystring.get("Marker", ["0"])[0] or 0)
        size = min(int(querystring.get("MaxItems", [str(most)])[0]), most)
    except ValueError:
        raise lambda_exceptions.InvalidParameterValueException("Invalid pagination token or MaxItems")
    page: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        page["NextMarker"] = str(start + size)
    return page


def install() -> None:
    patch(lambda_models.LambdaStorage, "publish_version", publish_version)
    patch(LambdaResponse, "publish_version", publish_version_action)
    patch(lambda_models.LambdaStorage, "update_alias", update_alias)
    patch(lambda_models.LambdaStorage, "put_alias", put_alias)
    patch(lambda_models.LambdaStorage, "delete_alias", delete_alias)
    patch(lambda_models.LambdaBackend, "delete_function", delete_function)
    patch(lambda_models.LambdaBackend, "add_permission", add_permission)
    patch(lambda_models.LambdaBackend, "get_policy", get_policy)
    patch(lambda_models.LambdaBackend, "remove_permission", remove_permission)
    patch(LambdaResponse, "remove_permission", remove_permission_action)
    patch(lambda_models.LambdaBackend, "create_event_source_mapping", create_event_source_mapping)
    patch(lambda_models.LambdaBackend, "update_event_source_mapping", update_event_source_mapping)
    patch(lambda_models.LambdaBackend, "list_event_source_mappings", list_event_source_mappings)
    patch(LambdaResponse, "list_event_source_mappings", list_event_source_mappings_action)
