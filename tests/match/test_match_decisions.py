"""Sessions with options on one function, decided without AWS: joining PLLDB_SESSIONS, the timeout while
instrumented, and leaving it; whatever the order, the last one to leave restores the function exactly."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from plldb import protocol
from plldb.instrumentation import decisions
from tests.instrumentation.test_decisions import PLLDB_LAYER, applied, configuration, target

A = "9ada04b8-639d-476f-af6a-40c89714b812"
B = "1c8f8a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
C = "2d9f8a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
DEPLOYED = configuration({"GREETING": "Hello"}, [], 10)


def joined(
    config: dict[str, Any], session_id: str, observe: bool, match: str | None, timeout: int = 900
) -> dict[str, Any]:
    entry = protocol.session_entry(session_id, observe, match, 1.0)
    return applied(
        config, decisions.instrument_update(config, target(session_id, entry=entry, timeout=timeout))
    )


def listed(config: dict[str, Any]) -> list[tuple[str, bool, str | None]]:
    return [(e["id"], e["observe"], e["match"]) for e in decisions.session_entries(config)]


def test_sessions_join_in_order_and_each_is_a_member() -> None:
    first = joined(DEPLOYED, A, False, "a")
    both = joined(first, B, False, "b")
    assert listed(both) == [(A, False, "a"), (B, False, "b")]
    assert decisions.sessions_of(both) == [A, B]
    assert decisions.session_of(both) is None
    assert protocol.ENV_SESSION_ID not in both["Environment"]["Variables"]
    # Attaching again replaces the session's own entry in its place.
    again = joined(both, A, True, "a2")
    assert listed(again) == [(A, True, "a2"), (B, False, "b")]
    assert decisions.original_of(again, PLLDB_LAYER) == decisions.original_of(DEPLOYED, PLLDB_LAYER)


def test_observing_sessions_keep_the_deployed_timeout_and_a_debugging_one_raises_it() -> None:
    observing = joined(DEPLOYED, A, True, None)
    assert observing["Timeout"] == 10
    debugging = joined(observing, B, False, "b", timeout=300)
    assert debugging["Timeout"] == 300
    # An observing session joining later keeps the debugging one's timeout.
    assert joined(debugging, C, True, None)["Timeout"] == 300
    # Once only observing sessions are left, the deployed timeout comes back.
    left = applied(debugging, decisions.leave_update(debugging, B, PLLDB_LAYER))  # type: ignore[arg-type]
    assert (listed(left), left["Timeout"]) == ([(A, True, None)], 10)


def test_the_last_session_to_leave_has_no_leave_update_and_strips_the_function() -> None:
    only = joined(DEPLOYED, A, False, "a")
    assert decisions.leave_update(only, A, PLLDB_LAYER) is None
    assert decisions.leave_update(only, B, PLLDB_LAYER) is None  # not there: nothing to take out
    assert applied(only, decisions.strip_update(only, PLLDB_LAYER)) == DEPLOYED


@pytest.mark.parametrize("order", list(itertools.permutations([A, B, C])))
def test_any_order_of_leaving_restores_exactly(order: tuple[str, ...]) -> None:
    config = DEPLOYED
    for session_id, observe in ((A, True), (B, False), (C, False)):
        config = joined(config, session_id, observe, None if observe else session_id[:4])
    for session_id in order[:-1]:
        update = decisions.leave_update(config, session_id, PLLDB_LAYER)
        assert update is not None
        config = applied(config, update)
    assert decisions.sessions_of(config) == [order[-1]]
    assert decisions.leave_update(config, order[-1], PLLDB_LAYER) is None
    assert applied(config, decisions.strip_update(config, PLLDB_LAYER)) == DEPLOYED


def test_a_plain_attach_takes_the_function_whole() -> None:
    shared = joined(DEPLOYED, A, False, "a")
    plain = applied(shared, decisions.instrument_update(shared, target(B)))
    assert (decisions.sessions_of(plain), protocol.ENV_SESSIONS in plain["Environment"]["Variables"]) == (
        [B],
        False,
    )
