"""`plldb attach --observe`, `--match`, `--match-token` and `--sample`: a session with options.

A session with options joins the function's PLLDB_SESSIONS list instead of taking the function alone
(DEBUGGER_SESSION_ID): the layer routes each invocation to the first session whose sample draw passes
and whose match selects the event, and runs the deployed code for the rest. An observing session is
shown each invocation after the cloud answered it. This module checks the options (one clear line for
a mistake, before anything changes) and compares a local outcome with the cloud's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from plldb import protocol
from plldb.errors import PlldbError

MATCH_TOKEN_HEADER = "x-plldb-debug"
DIFF_TEXT_LIMIT = 120  # characters of each side shown in the one-line difference


@dataclass(frozen=True)
class SessionOptions:
    observe: bool
    match: str | None
    sample: float
    token: str | None = None  # --match-token: the value the header must carry

    @property
    def shared(self) -> bool:
        """A session with a match may share its stack with other sessions that have one."""
        return self.match is not None

    def entry(self, session_id: str) -> protocol.SessionEntry:
        return protocol.session_entry(session_id, self.observe, self.match, self.sample)


def token_expression(token: str) -> str:
    """The match of --match-token: the header an API Gateway proxy event carries (HTTP headers are
    case-insensitive; API Gateway's HTTP APIs lower-case them, and so does the header plldb prints)."""
    return f"headers.\"{MATCH_TOKEN_HEADER}\" == '{token}'"


def session_options(
    *, observe: bool, sample: float | None, match: str | None, match_token: bool
) -> SessionOptions | None:
    """The options of `plldb attach`, checked; None for a plain attach (no option given)."""
    if match is not None and match_token:
        raise PlldbError("--match and --match-token cannot be used together.", "Choose one of them.")
    if sample is not None and not (observe or match is not None or match_token):
        raise PlldbError("--sample needs --observe, --match or --match-token.", "Add one of them.")
    if sample is not None and not 0 < sample <= 1:
        raise PlldbError(
            f"--sample {sample:g} is not a fraction of invocations.",
            "Pass a number greater than 0 and at most 1 (0.1 for one invocation in ten).",
        )
    token = None
    if match_token:
        token = secrets.token_hex(16)
        match = token_expression(token)
    if match is not None:
        if not match.strip() or len(match) > protocol.MAX_MATCH_LENGTH:
            raise PlldbError(
                f"--match needs a JMESPath expression of at most {protocol.MAX_MATCH_LENGTH} characters.",
                'For example: --match "headers.\\"x-user\\" == \'me\'"',
            )
        try:
            compiled = jmespath.compile(match)
        except (JMESPathError, RecursionError) as exc:
            first = str(exc).splitlines()[0].rstrip(": ") or "too deeply nested"
            raise PlldbError(
                f"--match {match!r} is not a JMESPath expression: {first}.",
                "Check it with `aws ... --query` syntax (https://jmespath.org).",
            )
        too_costly = protocol.match_cost_problem(compiled.parsed)
        if too_costly is not None:
            raise PlldbError(f"--match {match!r} is refused: {too_costly}.", "Write a simpler expression.")
    if not observe and match is None:
        return None
    return SessionOptions(observe=observe, match=match, sample=1.0 if sample is None else sample, token=token)


# --- Observe: the local outcome next to the cloud's -----------------------------------------------------
def _normalised_result(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def compare(
    local_ok: bool,
    local_payload: str | None,
    local_error: Mapping[str, Any] | None,
    observed: Mapping[str, Any],
) -> str | None:
    """None when the local run gave what the cloud gave; otherwise one line saying how they differ.

    Results compare as JSON values (key order and spacing do not count); errors by type and message
    (stack traces name different files here and there).
    """
    if "error" in observed:
        cloud = observed["error"] or {}
        if local_ok:
            return "cloud {}: {} | local result {}".format(
                cloud.get("errorType"), _cut(str(cloud.get("errorMessage"))), _cut(local_payload or "null")
            )
        local = local_error or {}
        if (cloud.get("errorType"), cloud.get("errorMessage")) == (
            local.get("errorType"),
            local.get("errorMessage"),
        ):
            return None
        return "cloud {}: {} | local {}: {}".format(
            cloud.get("errorType"),
            _cut(str(cloud.get("errorMessage"))),
            local.get("errorType"),
            _cut(str(local.get("errorMessage"))),
        )
    if not local_ok:
        local = local_error or {}
        return "cloud result {} | local {}: {}".format(
            _cloud_result_text(observed), local.get("errorType"), _cut(str(local.get("errorMessage")))
        )
    if "result" not in observed:
        digest = protocol.sha256_hex((local_payload or "").encode("utf-8"))
        if digest == observed.get("resultSha256"):
            return None
        return "cloud result {} | local result {}".format(
            _cloud_result_text(observed), _cut(local_payload or "")
        )
    if _normalised_result(str(observed["result"])) == _normalised_result(local_payload or "null"):
        return None
    return "cloud result {} | local result {}".format(
        _cut(str(observed["result"])), _cut(local_payload or "null")
    )


def _cloud_result_text(observed: Mapping[str, Any]) -> str:
    if "result" in observed:
        return _cut(str(observed["result"]))
    return "of {} bytes (sha256 {})".format(
        observed.get("resultSize"), str(observed.get("resultSha256"))[:12]
    )


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DIFF_TEXT_LIMIT else text[: DIFF_TEXT_LIMIT - 1] + "…"


def observed_event(invocation: Any, outcome: Any, observed: Mapping[str, Any]) -> dict[str, Any]:
    """The `observed` event of `attach --json`: the local run and the cloud's outcome, and how they differ."""
    local: dict[str, Any] = {
        "status": "ok" if outcome.ok else "error",
        "durationMs": round(outcome.duration_ms, 1),
    }
    if outcome.ok:
        local["result"] = outcome.payload
    else:
        local["error"] = dict(outcome.error or {})
    cloud: dict[str, Any] = {"status": "error" if "error" in observed else "ok", **observed}
    difference = compare(outcome.ok, outcome.payload, outcome.error, observed)
    return {
        "function": invocation.function_name,
        "requestId": invocation.request_id,
        "local": local,
        "cloud": cloud,
        "differs": difference is not None,
        "difference": difference,
    }


def observed_lines(label: str, request: str, event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The console's lines for an observed invocation: both outcomes, then the difference if any."""
    local, cloud = event["local"], event["cloud"]
    line = "== {} {} local {} {:.0f} ms | cloud {} {:.0f} ms".format(
        label,
        request,
        local["status"],
        local["durationMs"],
        cloud["status"],
        float(cloud.get("durationMs") or 0),
    )
    if not event["differs"]:
        return [(line + " | same", "green")]
    return [(line + " | DIFFERENT", "bold yellow"), (f"   {event['difference']}", "yellow")]


def announce(console: Any, options: SessionOptions) -> None:
    """Say what the session will receive (and, for --match-token, the header to send)."""
    parts = []
    if options.observe:
        parts.append("observing: the deployed code keeps answering, and each invocation also runs here")
    if options.token is not None:
        parts.append(f"only requests with the header '{MATCH_TOKEN_HEADER}: {options.token}' come here")
    elif options.match is not None:
        parts.append(f"only invocations whose event matches {options.match!r} come here")
    if options.sample < 1:
        parts.append(f"sampling {options.sample:g} of them")
    console.info(
        "Session options: " + "; ".join(parts) + ".",
        event="session_options",
        observe=options.observe,
        match=options.match,
        sample=options.sample,
        header={MATCH_TOKEN_HEADER: options.token} if options.token is not None else None,
    )
