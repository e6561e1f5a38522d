"""What plldb changes on a Lambda function, and how to undo it exactly: pure decisions, no AWS calls.

The developer's plldb instruments and restores functions with the developer's own credentials; the
helper stack's manager only ever strips plldb's own additions from a function whose session died.
Both decide here, from a function's configuration alone: everything plldb replaces (the timeout, the
function's own exec wrapper, the absence of an environment) is kept on the function itself in
``PLLDB_ORIGINAL_*`` variables, and plldb's layer is the only layer it adds. So a restore never needs
data that anyone but the function's own configuration holds. Standard library only: the manager runs
this inside Lambda (Python 3.10 to 3.13).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plldb import protocol

MAX_LAYERS = 5  # Lambda's limit on layers per function
MAX_ENVIRONMENT_BYTES = 4 * 1024  # Lambda's limit on a function's variables (names and values)
MAX_TIMEOUT_SECONDS = 900
DEFAULT_TIMEOUT_SECONDS = 3  # Lambda's default when a configuration has none


@dataclass(frozen=True)
class Original:
    """The fields plldb changes, as they were before plldb (``derived`` when partly unknowable)."""

    environment: dict[str, str] | None
    layers: list[str]
    timeout: int
    derived: bool = False


@dataclass(frozen=True)
class Target:
    """What one debugging session puts on a function."""

    session_id: str
    dispatcher_arn: str
    invocations_table: str
    payload_bucket: str
    layer_version_arn: str
    fallback: str = protocol.FALLBACK_ERROR
    timeout: int = MAX_TIMEOUT_SECONDS
    extra: dict[str, str] = field(default_factory=dict)  # further plldb variables (for aliases)
    # A session with options (observe, match, sample): it joins PLLDB_SESSIONS instead of taking the
    # function with DEBUGGER_SESSION_ID; None for a plain attach.
    entry: protocol.SessionEntry | None = None


def variables(config: Mapping[str, Any]) -> dict[str, str] | None:
    """The function's variables, or None when it has no Environment at all."""
    environment = config.get("Environment")
    if not environment or "Variables" not in environment:
        return None
    return dict(environment.get("Variables") or {})


def layer_arns(config: Mapping[str, Any]) -> list[str]:
    return [str(layer["Arn"]) for layer in config.get("Layers") or []]


def layer_base(layer_version_arn: str) -> str:
    """arn:...:layer:NAME:VERSION -> arn:...:layer:NAME (every version of the same layer)."""
    return layer_version_arn.rsplit(":", 1)[0] if layer_version_arn.count(":") >= 7 else layer_version_arn


def session_of(config: Mapping[str, Any]) -> str | None:
    """The session a plain attach instrumented the function for (DEBUGGER_SESSION_ID), if any."""
    value = (variables(config) or {}).get(protocol.ENV_SESSION_ID)
    return str(value) if value else None


def session_entries(config: Mapping[str, Any]) -> list[protocol.SessionEntry]:
    """The sessions with options (PLLDB_SESSIONS) the function carries; none when absent or invalid."""
    text = (variables(config) or {}).get(protocol.ENV_SESSIONS)
    if not text:
        return []
    try:
        return protocol.parse_sessions(text)
    except ValueError:
        return []


def sessions_of(config: Mapping[str, Any]) -> list[str]:
    """Every session the function is instrumented for: DEBUGGER_SESSION_ID, or PLLDB_SESSIONS' ids."""
    single = session_of(config)
    return [single] if single else [entry["id"] for entry in session_entries(config)]


def is_instrumented(config: Mapping[str, Any], layer_version_arn: str = "") -> bool:
    """Whether any trace of plldb is on the function (a variable, the wrapper, or plldb's layer)."""
    present = variables(config) or {}
    if any(
        name in present for name in protocol.INSTRUMENTATION_VARIABLES if name != protocol.ENV_EXEC_WRAPPER
    ):
        return True
    if present.get(protocol.ENV_EXEC_WRAPPER) == protocol.LAYER_WRAPPER_PATH:
        return True
    if not layer_version_arn:
        return False
    ours = layer_base(layer_version_arn)
    return any(layer_base(arn) == ours for arn in layer_arns(config))


def original_of(config: Mapping[str, Any], layer_version_arn: str) -> Original:
    """The function as deployed: its current configuration, minus plldb's additions if it carries any.

    Exact when the ``PLLDB_ORIGINAL_*`` variables are there (plldb always writes them); a function that
    carries plldb's traces without them (an older plldb) keeps its current timeout and says so.
    """
    present = variables(config)
    layers = layer_arns(config)
    timeout = int(config.get("Timeout") or DEFAULT_TIMEOUT_SECONDS)
    if not is_instrumented(config, layer_version_arn):
        return Original(environment=present, layers=layers, timeout=timeout)
    present = dict(present or {})
    derived = False
    try:
        timeout = int(present[protocol.ENV_ORIGINAL_TIMEOUT])
    except (KeyError, ValueError):
        derived = True
    absent = present.get(protocol.ENV_ORIGINAL_ENVIRONMENT) == protocol.ORIGINAL_ENVIRONMENT_ABSENT
    chained = present.get(protocol.ENV_ORIGINAL_EXEC_WRAPPER)
    for name in protocol.INSTRUMENTATION_VARIABLES:
        if name == protocol.ENV_EXEC_WRAPPER and present.get(name) != protocol.LAYER_WRAPPER_PATH:
            continue  # the function's own wrapper, never replaced by ours
        present.pop(name, None)
    if chained:
        present[protocol.ENV_EXEC_WRAPPER] = chained
    ours = layer_base(layer_version_arn) if layer_version_arn else None
    own_layers = [arn for arn in layers if layer_base(arn) != ours]
    environment = None if absent and not present else present
    return Original(environment=environment, layers=own_layers, timeout=timeout, derived=derived)


def instrumented_variables(
    original: Original, target: Target, entries: list[protocol.SessionEntry] | None = None
) -> dict[str, str]:
    """The original variables plus the session's; the function's own wrapper is chained, not lost.

    ``entries``: with a target that has an entry, the PLLDB_SESSIONS list to write (see joined_entries).
    """
    env = dict(original.environment or {})
    own_wrapper = env.get(protocol.ENV_EXEC_WRAPPER)
    if own_wrapper and own_wrapper != protocol.LAYER_WRAPPER_PATH:
        env[protocol.ENV_ORIGINAL_EXEC_WRAPPER] = own_wrapper
    env[protocol.ENV_EXEC_WRAPPER] = protocol.LAYER_WRAPPER_PATH
    if target.entry is None:
        env[protocol.ENV_SESSION_ID] = target.session_id
    else:
        env[protocol.ENV_SESSIONS] = protocol.sessions_variable(entries or [target.entry])
    env[protocol.ENV_DISPATCHER] = target.dispatcher_arn
    env[protocol.ENV_INVOCATIONS_TABLE] = target.invocations_table
    env[protocol.ENV_PAYLOAD_BUCKET] = target.payload_bucket
    env[protocol.ENV_FALLBACK] = target.fallback
    env[protocol.ENV_ORIGINAL_TIMEOUT] = str(original.timeout)
    if original.environment is None:
        env[protocol.ENV_ORIGINAL_ENVIRONMENT] = protocol.ORIGINAL_ENVIRONMENT_ABSENT
    env.update(target.extra)
    return env


def environment_bytes(env: Mapping[str, str]) -> int:
    """How Lambda counts the 4 KB limit: the names and values of every variable."""
    return sum(len(name.encode("utf-8")) + len(value.encode("utf-8")) for name, value in env.items())


class CannotInstrument(ValueError):
    """The function cannot carry plldb's instrumentation; the message says why and what to do."""


def instrument_update(config: Mapping[str, Any], target: Target) -> dict[str, Any]:
    """The UpdateFunctionConfiguration arguments that instrument ``config`` for ``target``."""
    original = original_of(config, target.layer_version_arn)
    if config.get("PackageType") == "Image":
        raise CannotInstrument("container image functions cannot use layers")
    runtime = str(config.get("Runtime") or "")
    if not runtime.startswith("python"):
        raise CannotInstrument("runtime %s is not Python" % (runtime or "unknown"))
    if len(original.layers) >= MAX_LAYERS:
        raise CannotInstrument(
            f"it already has {len(original.layers)} layers and Lambda allows {MAX_LAYERS}, so the plldb "
            "layer cannot be added; remove a layer or leave this function out with --function"
        )
    entries = joined_entries(config, target) if target.entry is not None else None
    env = instrumented_variables(original, target, entries)
    if target.entry is not None:
        # Aliases already redirected by an earlier session keep their recorded origin on $LATEST.
        recorded = (variables(config) or {}).get(protocol.ENV_ALIASES)
        if recorded and protocol.ENV_ALIASES not in target.extra:
            env[protocol.ENV_ALIASES] = recorded
    if environment_bytes(env) > MAX_ENVIRONMENT_BYTES:
        raise CannotInstrument(
            "its variables and plldb's would exceed Lambda's 4 KB limit on a function's environment; "
            "shorten its variables or leave this function out with --function"
        )
    return {
        "Environment": {"Variables": env},
        "Layers": [*original.layers, target.layer_version_arn],
        "Timeout": instrumented_timeout(config, original, target, entries),
    }


def joined_entries(config: Mapping[str, Any], target: Target) -> list[protocol.SessionEntry]:
    """PLLDB_SESSIONS with ``target``'s entry added, or put in place of its earlier one (order kept).

    A function that a plain attach holds (DEBUGGER_SESSION_ID) has no entries to keep: the stack lock
    lets a session with options in only once that session is gone.
    """
    assert target.entry is not None
    kept = [entry for entry in session_entries(config) if entry["id"] != target.session_id]
    mine = [entry for entry in session_entries(config) if entry["id"] == target.session_id]
    if mine:
        position = session_entries(config).index(mine[0])
        return [*kept[:position], target.entry, *kept[position:]]
    return [*kept, target.entry]


def instrumented_timeout(
    config: Mapping[str, Any],
    original: Original,
    target: Target,
    entries: list[protocol.SessionEntry] | None,
) -> int:
    """The timeout while instrumented: the target's for a session that the caller waits on; the original
    one while every session is an observing one (the deployed code answers, nobody waits on a debugger)."""
    if target.entry is None:
        return max(1, min(MAX_TIMEOUT_SECONDS, target.timeout))
    candidates = [original.timeout]
    if not target.entry["observe"]:
        candidates.append(target.timeout)
    if any(not e["observe"] for e in entries or [] if e["id"] != target.session_id):
        candidates.append(int(config.get("Timeout") or original.timeout))
    return max(1, min(MAX_TIMEOUT_SECONDS, max(candidates)))


def leave_update(config: Mapping[str, Any], session_id: str, layer_version_arn: str) -> dict[str, Any] | None:
    """The update that takes ``session_id``'s entry out of PLLDB_SESSIONS while others stay; None when
    it was the last one (or not there): the function is then restored whole (strip_update)."""
    entries = session_entries(config)
    remaining = [entry for entry in entries if entry["id"] != session_id]
    if not remaining or len(remaining) == len(entries):
        return None
    original = original_of(config, layer_version_arn)
    env = dict(variables(config) or {})
    env[protocol.ENV_SESSIONS] = protocol.sessions_variable(remaining)
    timeout = int(config.get("Timeout") or original.timeout)
    if all(entry["observe"] for entry in remaining):
        timeout = original.timeout
    return {
        "Environment": {"Variables": env},
        "Layers": layer_arns(config),
        "Timeout": timeout,
    }


def restore_update(original: Original) -> dict[str, Any]:
    """The UpdateFunctionConfiguration arguments that put ``original`` back exactly."""
    return {
        "Environment": {"Variables": dict(original.environment or {})},
        "Layers": list(original.layers),
        "Timeout": original.timeout,
    }


def strip_update(config: Mapping[str, Any], layer_version_arn: str) -> dict[str, Any]:
    """Remove plldb's additions from an instrumented function (all the helper stack ever does)."""
    return restore_update(original_of(config, layer_version_arn))


def same_original(a: Original, b: Original) -> bool:
    """Whether two reads describe the same deployed function (a deploy in between changes it)."""
    return (a.environment, a.layers, a.timeout) == (b.environment, b.layers, b.timeout)


# --- Aliases ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AliasTarget:
    """Where an alias sends traffic: one version, plus weighted extra versions."""

    version: str
    weights: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def of(alias: Mapping[str, Any]) -> AliasTarget:
        routing = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return AliasTarget(str(alias.get("FunctionVersion")), {str(k): float(v) for k, v in routing.items()})

    def update(self) -> dict[str, Any]:
        """UpdateAlias arguments that send the traffic back here."""
        return {
            "FunctionVersion": self.version,
            "RoutingConfig": {"AdditionalVersionWeights": dict(self.weights)},
        }


def aliases_variable(aliases: Mapping[str, AliasTarget]) -> str:
    """The PLLDB_ALIASES value: where each alias pointed before plldb, as compact sorted JSON."""
    return json.dumps(
        {
            name: {"version": target.version, "weights": target.weights}
            for name, target in sorted(aliases.items())
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def alias_originals(config: Mapping[str, Any]) -> dict[str, AliasTarget]:
    """The aliases' original targets recorded on a version plldb published (empty when none)."""
    text = (variables(config) or {}).get(protocol.ENV_ALIASES)
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    originals: dict[str, AliasTarget] = {}
    if isinstance(value, dict):
        for name, target in value.items():
            if isinstance(target, dict) and isinstance(target.get("version"), str):
                weights = target.get("weights")
                weights = weights if isinstance(weights, dict) else {}
                originals[str(name)] = AliasTarget(
                    target["version"],
                    {str(k): float(v) for k, v in weights.items() if isinstance(v, (int, float))},
                )
    return originals


def redirect_update(version: str) -> dict[str, Any]:
    """UpdateAlias arguments that send all of an alias's traffic to ``version`` (plldb's)."""
    return {"FunctionVersion": version, "RoutingConfig": {"AdditionalVersionWeights": {}}}


def published_description(session_id: str) -> str:
    return protocol.PUBLISHED_VERSION_PREFIX + session_id
