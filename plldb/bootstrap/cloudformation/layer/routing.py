"""Which session, if any, takes an invocation of a function that carries PLLDB_SESSIONS.

A function instrumented for sessions with options (``plldb attach --observe``, ``--match``,
``--sample``) lists them in PLLDB_SESSIONS, in order. For each invocation the layer takes the first
entry whose sample draw passes (``draw() < sample``) and whose match is null or selects a truthy value
of the event (``jmespath.search``, as the AWS CLI's ``--query`` does); no entry means the deployed
handler runs here, exactly as without plldb. jmespath ships with botocore, which Lambda's Python
runtime includes. An expression that fails on an event (a type error in a function, for example) is
no match, logged once per expression.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from plldb import protocol

LOGGER = logging.getLogger("plldb.layer")


@dataclass(frozen=True)
class Route:
    """One session of PLLDB_SESSIONS, its expression compiled."""

    session_id: str
    observe: bool
    match: str | None
    sample: float
    compiled: Any = None


def compile_routes(entries: Sequence[protocol.SessionEntry]) -> tuple[list[Route], list[str]]:
    """The routes of ``entries``, and a problem for each expression that does not compile."""
    routes: list[Route] = []
    problems: list[str] = []
    for entry in entries:
        compiled = None
        if entry["match"] is not None:
            try:
                compiled = jmespath.compile(entry["match"])
            except (JMESPathError, RecursionError) as exc:
                problems.append(
                    "{} of session {} is not a JMESPath expression ({})".format(
                        protocol.ENV_SESSIONS, entry["id"][:8], str(exc).splitlines()[0].rstrip(": ")
                    )
                )
                continue
            too_costly = protocol.match_cost_problem(compiled.parsed)
            if too_costly is not None:
                problems.append(
                    f"the match of session {entry['id'][:8]} in {protocol.ENV_SESSIONS}: {too_costly}"
                )
                continue
        routes.append(Route(entry["id"], entry["observe"], entry["match"], entry["sample"], compiled))
    return routes, problems


def routes_from_environment(text: str) -> tuple[list[Route], list[str]]:
    """The routes a PLLDB_SESSIONS value describes, and what is wrong with it (empty when valid)."""
    try:
        entries = protocol.parse_sessions(text)
    except ValueError as exc:
        return [], [str(exc)]
    return compile_routes(entries)


class Router:
    """Picks the route of each invocation; ``draw`` is the random source (a test injects its own)."""

    def __init__(self, routes: Sequence[Route], draw: Callable[[], float] = random.random) -> None:
        self._routes = list(routes)
        self._draw = draw
        self._reported: set[str] = set()

    def choose(self, event_body: bytes) -> Route | None:
        """The first route whose sample passes and whose match selects this event; None for the cloud."""
        event: Any = None
        parsed = False
        for route in self._routes:
            if route.sample < 1 and not self._draw() < route.sample:
                continue
            if route.compiled is None:
                return route
            if not parsed:
                event, parsed = _event_of(event_body), True
            if self._matches(route, event):
                return route
        return None

    def _matches(self, route: Route, event: Any) -> bool:
        try:
            return bool(route.compiled.search(event))
        except Exception as exc:  # JMESPathError, and what its functions raise on odd input (ValueError...)
            if route.session_id not in self._reported:
                self._reported.add(route.session_id)
                LOGGER.warning(
                    "plldb: the match of session %s failed on an event and counts as no match (%s)",
                    route.session_id[:8],
                    str(exc).splitlines()[0].rstrip(": "),
                )
            return False


def _event_of(body: bytes) -> Any:
    """The event as the handler receives it (JSON); an event that is not JSON matches nothing but null."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


# The cloud's outcome travels inside the `invoke` message, next to the event: a result or an error
# larger than this is sent as its size and SHA-256 (the client says so) so the event still fits.
OBSERVED_INLINE_LIMIT = 32 * 1024


def observed_outcome(body: bytes | None, error: dict[str, Any] | None, duration_ms: float) -> dict[str, Any]:
    """The ``observed`` field of an observed invocation's payload (protocol.ObservedOutcome)."""
    observed: dict[str, Any] = {"durationMs": round(duration_ms, 3)}
    if error is not None or body is None:
        document = dict(error or {"errorMessage": "no answer", "errorType": "PlldbLayerError"})
        if len(json.dumps(document)) > OBSERVED_INLINE_LIMIT:
            document = {
                "errorMessage": str(document.get("errorMessage"))[:1024],
                "errorType": str(document.get("errorType"))[:256],
                "stackTrace": [],
            }
        observed["error"] = document
        return observed
    if len(body) <= OBSERVED_INLINE_LIMIT:
        try:
            observed["result"] = body.decode("utf-8")
            return observed
        except UnicodeDecodeError:
            pass
    observed["resultSize"] = len(body)
    observed["resultSha256"] = protocol.sha256_hex(body)
    return observed
