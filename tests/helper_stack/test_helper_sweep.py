"""The manager's scheduled sweep: the dead-man's switch for sessions whose $disconnect never came.

One scenario on tables of its own (this module's), with the manager's clock injected, so every count is
exact: expired sessions are closed (and restored when they were active), a connection gone without a
$disconnect is marked and restored one grace period later, live sessions are left alone, and locks whose
holder is gone or closed are freed.
"""

from __future__ import annotations

import uuid

from helper_stack_sessions import OK, AttachedStack, Client

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers import manager


def test_the_sweep_closes_and_restores_exactly_the_dead_sessions_and_frees_stale_locks(
    helper, app, monkeypatch
):
    now = int(manager.now_seconds())
    grace = int(helper.manager.disconnect_grace_seconds)
    monkeypatch.setattr(manager, "now_seconds", lambda: now)

    pending_expired, pending_live = Client(helper), Client(helper)
    assert pending_expired.connect() == OK and pending_live.connect() == OK
    helper.update_session(pending_expired.session_id, **{protocol.A_TTL: now - 1})

    def attached() -> AttachedStack:
        return AttachedStack(helper, app, count=1, nested=False)

    expired, silent, alive, recent, old = attached(), attached(), attached(), attached(), attached()
    helper.update_session(expired.client.session_id, **{protocol.A_TTL: now - 1})
    for gone in (silent, recent, old):
        helper.management.go(gone.client.connection_id)
    helper.update_session(recent.client.session_id, **{protocol.A_DISCONNECTED_AT: now - grace + 1})
    helper.update_session(old.client.session_id, **{protocol.A_DISCONNECTED_AT: now - grace})

    closed_holder = Client(helper)
    assert closed_holder.connect() == OK
    helper.update_session(closed_holder.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    stale_locks = {
        "arn:aws:cloudformation:us-east-1:123456789012:stack/gone-holder/1": str(uuid.uuid4()),
        "arn:aws:cloudformation:us-east-1:123456789012:stack/closed-holder/2": closed_holder.session_id,
    }
    for stack_id, holder in stale_locks.items():
        helper.put("PLLDBStackLocks", {protocol.A_STACK_ID: stack_id, protocol.A_SESSION_ID: holder})

    first = manager.handle({"action": "sweep"}, helper.manager)

    assert first == {"action": "sweep", "restoredSessions": 2, "staleLocks": 2}
    status = {c.session_id: c.session()[protocol.A_STATUS] for c in (pending_expired, pending_live)}
    assert status == {pending_expired.session_id: "CLOSED", pending_live.session_id: "PENDING"}
    assert pending_expired.session()[protocol.A_CLOSED_REASON] == protocol.CLOSED_EXPIRED
    assert (expired.client.session()[protocol.A_CLOSED_REASON], expired.snapshots()) == (
        protocol.CLOSED_EXPIRED,
        expired.before,
    )
    assert (old.client.session()[protocol.A_CLOSED_REASON], old.snapshots()) == (
        protocol.CLOSED_ABANDONED,
        old.before,
    )
    for kept in (silent, alive, recent):
        assert kept.client.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE
        assert set(kept.instrumented_for().values()) == {kept.client.session_id}
        assert helper.lock_item(kept.stack_id)[protocol.A_SESSION_ID] == kept.client.session_id
    assert silent.client.session()[protocol.A_DISCONNECTED_AT] == now, "the grace period starts now"
    assert protocol.A_DISCONNECTED_AT not in alive.client.session()
    for stack_id in (*stale_locks, expired.stack_id, old.stack_id):
        assert helper.lock_item(stack_id) is None

    monkeypatch.setattr(manager, "now_seconds", lambda: now + grace)
    second = manager.handle({"action": "sweep"}, helper.manager)

    assert second == {"action": "sweep", "restoredSessions": 2, "staleLocks": 0}
    for restored in (silent, recent):
        assert restored.client.session()[protocol.A_CLOSED_REASON] == protocol.CLOSED_ABANDONED
        assert restored.snapshots() == restored.before
        assert helper.lock_item(restored.stack_id) is None
    assert alive.client.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert set(alive.instrumented_for().values()) == {alive.client.session_id}

    listed = manager.handle({"action": "status"}, helper.manager)["activeSessions"]
    assert [s["stackId"] for s in listed] == [alive.stack_id]
    assert manager.handle({"action": "sweep"}, helper.manager) == {
        "action": "sweep",
        "restoredSessions": 0,
        "staleLocks": 0,
    }
