"""Instrument and restore one function: its configuration, its aliases and its execution role.

Instrumenting (the developer's credentials only): the role is tagged for the function and carries the
helper stack's InstrumentedFunctionPolicy; the function gets the layer, the session's variables and
timeout, with what they replace kept in ``PLLDB_ORIGINAL_*`` variables on the function itself; an alias
that sends traffic to a published version is pointed at a version plldb publishes of the instrumented
configuration (that version records where each alias pointed), so alias traffic reaches the debugger.

Restoring (the developer's credentials, or the manager for a dead session) undoes exactly that, in the
reverse order, from what the function itself records: aliases back, plldb's versions deleted, the
configuration stripped of plldb's additions, the role's tag removed and, with its last tag, the policy.
A function changed by someone else meanwhile (a deploy) is left as they left it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from plldb import protocol
from plldb.instrumentation import decisions, traffic
from plldb.instrumentation.decisions import AliasTarget, CannotInstrument, Original, Target
from plldb.instrumentation.lambda_updates import (
    ChangedMeanwhile,
    UpdateFailed,
    get_configuration,
    update_until_applied,
    wait_until_active,
)
from plldb.lambda_common import error_code, error_text

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"
# Publishing the list again when another session changed it in between, at most this often.
PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class FunctionRef:
    name: str  # the physical function name
    path: str  # its logical id, with nested stacks' ids before it ("Api/HelloFunction")


@dataclass(frozen=True)
class Clients:
    """The AWS clients and facts a change needs (the developer's, or the manager's)."""

    lambda_client: Any
    iam: Any
    region: str
    layer_version_arn: str
    policy_arn: str
    sqs: Any = None  # only to name a feeding queue's visibility timeout
    # The developer's plldb tags roles; the helper stack's manager only ever removes plldb's tags.
    may_tag: bool = True


@dataclass(frozen=True)
class Instrumented:
    """A function this session changed, and what it was before."""

    function: FunctionRef
    original: Original
    role_arn: str
    runtime: str
    handler: str
    variable_names: frozenset[str]  # the function's own variables: the only ones its local run may take
    aliases: dict[str, AliasTarget] = field(default_factory=dict)
    published_version: str | None = None


@dataclass(frozen=True)
class Result:
    function: FunctionRef
    status: str
    message: str
    instrumented: Instrumented | None = None
    notes: tuple[str, ...] = ()  # what the developer should know: traffic plldb leaves alone, pauses

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


# --- Instrument -------------------------------------------------------------------------------------------
def instrument(
    clients: Clients,
    function: FunctionRef,
    target: Target,
    *,
    redirect_aliases: bool = True,
    include_provisioned: bool = False,
    mappings: Iterable[Mapping[str, Any]] = (),
) -> Result:
    """Instrument one function for ``target``'s session; on any failure it is put back as it was.

    ``mappings`` are the event source mappings feeding the function (listed once for the whole stack).
    An alias with provisioned concurrency is left alone unless ``include_provisioned``.
    """
    config = _configuration_or_failure(clients, function)
    if isinstance(config, Result):
        return config
    original = decisions.original_of(config, clients.layer_version_arn)
    mappings = list(mappings)
    notes: list[str] = [note for note in [traffic.vpc_note(config)] if note]
    notes += traffic.event_source_notes(mappings, clients.sqs)
    try:
        aliases: dict[str, AliasTarget] = {}
        if redirect_aliases:
            aliases, alias_notes = _aliases_and_notes(
                clients, function, config, mappings, include_provisioned
            )
            notes += alias_notes
        if aliases:
            target = replace(
                target, extra={**target.extra, protocol.ENV_ALIASES: decisions.aliases_variable(aliases)}
            )
        decisions.instrument_update(config, target)  # refuses early, before anything changes
    except CannotInstrument as exc:
        status = STATUS_SKIPPED if str(exc).startswith(("container", "runtime")) else STATUS_FAILED
        return Result(function, status, str(exc))
    except ClientError as exc:
        return Result(function, STATUS_FAILED, error_text(exc))
    except BotoCoreError as exc:
        return Result(function, STATUS_FAILED, str(exc))
    instrumented = Instrumented(
        function=function,
        original=original,
        role_arn=str(config.get("Role") or ""),
        runtime=str(config.get("Runtime") or ""),
        handler=str(config.get("Handler") or ""),
        variable_names=frozenset((original.environment or {}).keys()),
        aliases=aliases,
    )
    try:
        updated, instrumented = _apply(clients, instrumented, target, config)
    except (ClientError, BotoCoreError, UpdateFailed, ChangedMeanwhile, CannotInstrument) as exc:
        failure = error_text(exc) if isinstance(exc, ClientError) else str(exc)
        put_back = restore(clients, function, target.session_id)
        if put_back.status == STATUS_FAILED:
            failure += f"; putting it back failed too ({put_back.message}): run 'plldb detach'"
        return Result(function, STATUS_FAILED, failure)
    return Result(
        function, STATUS_OK, _instrumented_text(updated, target, instrumented), instrumented, tuple(notes)
    )


def _configuration_or_failure(
    clients: Clients, function: FunctionRef, missing: tuple[str, str] = (STATUS_FAILED, "function not found")
) -> dict[str, Any] | Result:
    """The function's current configuration, or the result that names why it cannot be read
    (``missing``: the status and message when the function does not exist)."""
    try:
        return get_configuration(clients.lambda_client, function.name)
    except BotoCoreError as exc:
        return Result(function, STATUS_FAILED, str(exc))
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return Result(function, *missing)
        return Result(function, STATUS_FAILED, error_text(exc))


def _aliases_and_notes(
    clients: Clients,
    function: FunctionRef,
    config: Mapping[str, Any],
    mappings: list[Mapping[str, Any]],
    include_provisioned: bool,
) -> tuple[dict[str, AliasTarget], list[str]]:
    """The aliases to point at plldb's version, and notes on the qualified traffic left where it is."""
    aliases = _aliases_to_redirect(clients, function)
    notes: list[str] = []
    if not aliases:
        return aliases, notes
    provisioned = traffic.provisioned_aliases(clients.lambda_client, function.name)
    for name, amount in sorted(provisioned.items()):
        if name in aliases and not include_provisioned:
            del aliases[name]
            notes.append(traffic.provisioned_note(name, amount))
    aliased = {target_.version for target_ in aliases.values()}
    notes += traffic.numbered_version_notes(
        clients.lambda_client, function.name, str(config.get("FunctionArn")), aliased, mappings
    )
    return aliases, notes


def _apply(
    clients: Clients, instrumented: Instrumented, target: Target, config: Mapping[str, Any]
) -> tuple[dict[str, Any], Instrumented]:
    """Tag the role, write the instrumented configuration, then move the aliases to a version of it."""
    function, original, role_arn = instrumented.function, instrumented.original, instrumented.role_arn
    tag_value = protocol.SHARED_TAG_VALUE if target.entry is not None else target.session_id
    reference_role(clients, role_arn, function.name, tag_value)

    def instrumented_configuration(current: Mapping[str, Any]) -> dict[str, Any]:
        if not decisions.same_original(decisions.original_of(current, clients.layer_version_arn), original):
            raise ChangedMeanwhile(
                "it was updated (a deploy?) while plldb instrumented it and is left as deployed; "
                "attach again to include it"
            )
        return decisions.instrument_update(current, target)

    updated = update_until_applied(
        clients.lambda_client, function.name, instrumented_configuration, known=config
    )
    if target.entry is not None:
        # A shared function's last session may have been leaving meanwhile and taken the "shared"
        # tag with it just before this update landed: tagged again, now that the update stands.
        reference_role(clients, role_arn, function.name, tag_value)
    if instrumented.aliases:
        version = _publish_list(clients, function, updated, target)
        instrumented = replace(instrumented, published_version=version)
        for name in instrumented.aliases:
            clients.lambda_client.update_alias(
                FunctionName=function.name, Name=name, **decisions.redirect_update(version)
            )
        if target.entry is not None:  # the version an earlier session's list ran goes
            _delete_unused_versions(clients, function, {version})
    return updated, instrumented


def _instrumented_text(updated: Mapping[str, Any], target: Target, instrumented: Instrumented) -> str:
    text = f"instrumented (timeout {updated.get('Timeout', target.timeout)} s)"
    aliases = instrumented.aliases
    if aliases:
        text += "; alias{} {} now send{} traffic to version {}".format(
            "es" if len(aliases) > 1 else "",
            ", ".join(sorted(aliases)),
            "" if len(aliases) > 1 else "s",
            instrumented.published_version,
        )
    if instrumented.original.derived:
        text += "; it carried plldb's variables without its original timeout, so its current one is kept"
    return text


def _aliases_to_redirect(clients: Clients, function: FunctionRef) -> dict[str, AliasTarget]:
    """Every alias that sends traffic to a published version, with where it sends it originally."""
    aliases: dict[str, AliasTarget] = {}
    for alias in _list_aliases(clients, function.name):
        current = AliasTarget.of(alias)
        if current.version == "$LATEST" and not current.weights:
            continue  # already reaches the instrumented $LATEST
        if current.version.isdigit():
            # An alias on a version an earlier, dead session published: its original is recorded there.
            version = get_configuration(clients.lambda_client, function.name, current.version)
            if decisions.sessions_of(version):
                recorded = decisions.alias_originals(version).get(str(alias["Name"]))
                current = recorded or current
        aliases[str(alias["Name"])] = current
    return aliases


def _list_aliases(clients: Clients, function_name: str) -> list[dict[str, Any]]:
    aliases: list[dict[str, Any]] = []
    for page in clients.lambda_client.get_paginator("list_aliases").paginate(FunctionName=function_name):
        aliases.extend(page.get("Aliases", []))
    return aliases


def _publish(clients: Clients, function: FunctionRef, config: Mapping[str, Any], session_id: str) -> str:
    """Publish exactly the configuration plldb just wrote (its RevisionId), as a new version."""
    arguments: dict[str, Any] = {
        "FunctionName": function.name,
        "Description": decisions.published_description(session_id),
    }
    if config.get("RevisionId"):
        arguments["RevisionId"] = config["RevisionId"]
    if config.get("CodeSha256"):
        arguments["CodeSha256"] = config["CodeSha256"]
    version = str(clients.lambda_client.publish_version(**arguments)["Version"])
    wait_until_active(clients.lambda_client, function.name, version)
    return version


def _publish_list(clients: Clients, function: FunctionRef, config: Mapping[str, Any], target: Target) -> str:
    """Publish the configuration just written. A session sharing the function (``target.entry``) may see
    another session join or leave between its update and its publish (Lambda then refuses the stale
    RevisionId): the function still carries this session's entry, so the current list is published."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            return _publish(clients, function, config, target.session_id)
        except ClientError as exc:
            if (
                target.entry is None
                or error_code(exc) != "PreconditionFailedException"
                or attempt == PUBLISH_ATTEMPTS
            ):
                raise
        config = get_configuration(clients.lambda_client, function.name)
        if target.session_id not in decisions.sessions_of(config):
            raise ChangedMeanwhile("it changed while plldb published it and no longer carries this session")
    raise AssertionError("unreachable")


def reference_role(clients: Clients, role_arn: str, function_name: str, session_id: str) -> None:
    """Tag the role for this function, then make sure it carries the policy (idempotent)."""
    if not role_arn or not clients.policy_arn:
        return
    role = _role_name(role_arn)
    clients.iam.tag_role(
        RoleName=role,
        Tags=[{"Key": protocol.role_tag_key(clients.region, function_name), "Value": session_id}],
    )
    clients.iam.attach_role_policy(RoleName=role, PolicyArn=clients.policy_arn)


def release_role(
    clients: Clients, role_arn: str, function_name: str, session_id: str | set[str] | None = None
) -> None:
    """Remove this function's tag, and the policy with the role's last plldb tag (attached back if a
    function started using the role meanwhile).

    With ``session_id`` (one value, or the values this restore owns), the tag goes only if that session
    put it there: a function that carries no
    instrumentation may still have its tag from an attach of that session that stopped half-way (or
    another session's attach under way, which is left alone). A role without any plldb tag never keeps
    the policy, so a restore that stopped between the two steps is finished by the next one. The tags
    are read after this function's own is removed, so of several functions of one role restored at
    once, the last one to remove its tag sees none left and detaches the policy.
    """
    if not role_arn or not clients.policy_arn:
        return
    role = _role_name(role_arn)
    key = protocol.role_tag_key(clients.region, function_name)
    try:
        owners = {session_id} if isinstance(session_id, str) else session_id
        tags = _plldb_tags(clients, role) if owners is not None else {key: ""}
        if key in tags and (owners is None or tags[key] in owners):
            clients.iam.untag_role(RoleName=role, TagKeys=[key])
            tags = _plldb_tags(clients, role)
        if tags:
            return
        clients.iam.detach_role_policy(RoleName=role, PolicyArn=clients.policy_arn)
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return  # the role is gone, or it does not carry the policy
        raise
    if _plldb_tags(clients, role):
        clients.iam.attach_role_policy(RoleName=role, PolicyArn=clients.policy_arn)


def _plldb_tags(clients: Clients, role: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for page in clients.iam.get_paginator("list_role_tags").paginate(RoleName=role):
        for tag in page.get("Tags", []):
            if str(tag["Key"]).startswith(protocol.ROLE_TAG_PREFIX):
                tags[str(tag["Key"])] = str(tag.get("Value") or "")
    return tags


def _role_name(role_arn: str) -> str:
    return role_arn.rsplit("/", 1)[-1]


# --- Restore ------------------------------------------------------------------------------------------------
def restore(
    clients: Clients, function: FunctionRef, session_id: str | None, *, attempts_left: int = PUBLISH_ATTEMPTS
) -> Result:
    """Remove plldb's additions made for ``session_id`` (for any session when None). Idempotent.

    One failing step leaves the function as it is and says so; running it again finishes the job.
    """
    config = _configuration_or_failure(clients, function, (STATUS_SKIPPED, "the function no longer exists"))
    if isinstance(config, Result):
        return config
    try:
        owners = decisions.sessions_of(config)
        traced = decisions.is_instrumented(config, clients.layer_version_arn)
        if traced and session_id is not None and len(owners) > 1 and session_id in owners:
            return _leave(clients, function, config, session_id)
        shared = bool(decisions.session_entries(config))
        notes = _restore_aliases(clients, function, session_id, any_version=shared and session_id in owners)
        if traced and session_id is not None and owners and session_id not in owners:
            return Result(function, STATUS_SKIPPED, "instrumented by another session; left alone")
        try:
            text = (
                _strip(clients, function, config, session_id)
                if traced
                else "already in its deployed configuration"
            )
        except _OthersJoined:
            if attempts_left <= 0:
                return Result(
                    function,
                    STATUS_FAILED,
                    "other sessions kept joining it while plldb restored it; restore it again",
                )
            return restore(clients, function, session_id, attempts_left=attempts_left - 1)  # now a leave
        # The tag goes only if this session put it there ("shared" for a shared function): another
        # session's attach may have tagged the role already and be about to update the function (the
        # manager's late restore of a dead session must not take its tag and policy).
        role_arn = str(config.get("Role") or "")
        owned: set[str] | None = None
        if session_id is not None:
            owned = {session_id, protocol.SHARED_TAG_VALUE} if shared else {session_id}
        release_role(clients, role_arn, function.name, owned)
        if shared and clients.may_tag:
            _tag_again_if_joined(clients, function, role_arn)
    except (ClientError, BotoCoreError, UpdateFailed) as exc:
        return Result(function, STATUS_FAILED, _restore_failure(exc))
    return Result(function, STATUS_OK, "; ".join([text, *notes]))


def _leave(clients: Clients, function: FunctionRef, config: Mapping[str, Any], session_id: str) -> Result:
    """Take one session's entry out of PLLDB_SESSIONS; the other sessions keep the function (and the
    role keeps its tag and policy, which the last one to leave removes)."""

    def left(current: Mapping[str, Any]) -> dict[str, Any]:
        update = decisions.leave_update(current, session_id, clients.layer_version_arn)
        if update is None:
            raise ChangedMeanwhile("the other sessions left meanwhile")
        return update

    try:
        updated = update_until_applied(clients.lambda_client, function.name, left, known=config)
    except ChangedMeanwhile:
        return restore(clients, function, session_id)  # now the last one: restored whole
    notes = _republish_aliases(clients, function, updated)
    return Result(function, STATUS_OK, "; ".join(["left to the other sessions", *notes]))


def _republish_aliases(clients: Clients, function: FunctionRef, config: Mapping[str, Any]) -> list[str]:
    """Aliases plldb redirected run a version carrying the current PLLDB_SESSIONS: publish one, move
    them there, and delete the versions plldb published that no alias references any more."""
    redirected = decisions.alias_originals(config)
    if not redirected:
        return []
    entries = decisions.session_entries(config)
    version = _publish(clients, function, config, entries[0]["id"] if entries else "")
    for name in redirected:
        clients.lambda_client.update_alias(
            FunctionName=function.name, Name=name, **decisions.redirect_update(version)
        )
    _delete_unused_versions(clients, function, {version})
    return [f"aliases {', '.join(sorted(redirected))} now on version {version}"]


def _delete_unused_versions(clients: Clients, function: FunctionRef, used: set[str]) -> None:
    """Delete every version plldb published (any session's) that no alias references, except ``used``."""
    for alias in _list_aliases(clients, function.name):
        target = decisions.AliasTarget.of(alias)
        used = used | {target.version, *target.weights}
    for old in sorted(_published_versions(clients, function.name, None), key=int):
        if old in used:
            continue
        try:
            clients.lambda_client.delete_function(FunctionName=function.name, Qualifier=old)
        except ClientError as exc:
            if error_code(exc) not in ("ResourceNotFoundException", "ResourceConflictException"):
                raise


def _restore_failure(exc: Exception) -> str:
    text = error_text(exc) if isinstance(exc, ClientError) else str(exc)
    if isinstance(exc, ClientError) and "Layer version" in text and "does not exist" in text:
        # Lambda refuses any update naming a layer version deleted since the function was deployed.
        text = text.rstrip(".") + (
            "; one of the function's own layer versions was deleted since it was deployed, so Lambda refuses "
            "to update it: redeploy the function (that removes plldb's instrumentation too)"
        )
    return text


class _TakenMeanwhile(ChangedMeanwhile):
    """Another session's attach instrumented the function between this restore's read and its update."""


class _OthersJoined(Exception):
    """Other sessions joined a shared function between this restore's read and its update."""


def _tag_again_if_joined(clients: Clients, function: FunctionRef, role_arn: str) -> None:
    """After the last session left a shared function and its tag went: a session whose update landed in
    between needs the tag (and so the policy) back."""
    if decisions.sessions_of(get_configuration(clients.lambda_client, function.name)):
        reference_role(clients, role_arn, function.name, protocol.SHARED_TAG_VALUE)


def _strip(clients: Clients, function: FunctionRef, config: Mapping[str, Any], session_id: str | None) -> str:
    def stripped(current: Mapping[str, Any]) -> dict[str, Any]:
        if not decisions.is_instrumented(current, clients.layer_version_arn):
            raise ChangedMeanwhile("redeployed while plldb restored it")  # the deploy wins
        owners = decisions.sessions_of(current)
        if session_id is not None and owners and session_id not in owners:
            raise _TakenMeanwhile("instrumented by another session meanwhile")  # that session's now
        if session_id is not None and set(owners) - {session_id}:
            raise _OthersJoined("another session joined meanwhile")  # leave it to them instead
        return decisions.strip_update(current, clients.layer_version_arn)

    try:
        update_until_applied(clients.lambda_client, function.name, stripped, known=config)
    except _TakenMeanwhile:
        return "instrumented by another session meanwhile; left to it"
    except ChangedMeanwhile:
        return "redeployed meanwhile; left as deployed"
    return "restored"


def _restore_aliases(
    clients: Clients, function: FunctionRef, session_id: str | None, any_version: bool = False
) -> list[str]:
    """Aliases back where they pointed, then the versions plldb published that nothing points at deleted.

    The versions of a function with aliases are listed even when it no longer carries plldb (a deploy
    meanwhile, an attach interrupted between its publish and its alias updates): a version is never left
    behind, and a function without aliases costs no listing (Lambda allows 15 control-plane requests a
    second per account).
    """
    notes: list[str] = []
    still_used: set[str] = set()
    aliases = _list_aliases(clients, function.name)
    for alias in aliases:
        target = decisions.AliasTarget.of(alias)
        original = None
        if target.version.isdigit():
            version_config = get_configuration(clients.lambda_client, function.name, target.version)
            owners = decisions.sessions_of(version_config)
            if owners and (session_id is None or session_id in owners):
                original = decisions.alias_originals(version_config).get(str(alias["Name"]))
                if original is None:
                    notes.append(
                        "alias {} points at plldb's version {} without a recorded origin; left".format(
                            alias["Name"], target.version
                        )
                    )
        if original is None:
            still_used |= {target.version, *target.weights}
            continue
        clients.lambda_client.update_alias(
            FunctionName=function.name, Name=alias["Name"], **original.update()
        )
        notes.append("alias {} back on version {}".format(alias["Name"], original.version))
        still_used |= {original.version, *original.weights}
    if not aliases:
        return notes  # plldb publishes a version only for a function with aliases to redirect
    # The last session with options to leave deletes the versions published for earlier lists too.
    mine = None if any_version else session_id
    unused = [v for v in _published_versions(clients, function.name, mine) if v not in still_used]
    for version in sorted(unused, key=int):
        try:
            clients.lambda_client.delete_function(FunctionName=function.name, Qualifier=version)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                continue
            if error_code(exc) != "ResourceConflictException":
                raise
            notes.append(f"version {version} is still in use; not deleted")
    return notes


def _published_versions(clients: Clients, function_name: str, session_id: str | None) -> list[str]:
    """Versions plldb published for the session (for any session when None)."""
    prefix = decisions.published_description(session_id) if session_id else protocol.PUBLISHED_VERSION_PREFIX
    found = []
    for page in clients.lambda_client.get_paginator("list_versions_by_function").paginate(
        FunctionName=function_name
    ):
        for version in page.get("Versions", []):
            if str(version.get("Version", "")).isdigit() and str(version.get("Description") or "").startswith(
                prefix
            ):
                found.append(str(version["Version"]))
    return found
