"""Sessions with a match on a function whose aliases send traffic to published versions (moto, the
developer's clients): each alias always runs a version carrying the current PLLDB_SESSIONS, plldb's
versions no alias references are deleted, and the last session to leave puts everything back exactly."""

from __future__ import annotations

import json
import uuid
from typing import Any

from plldb import protocol
from plldb.instrumentation import functions
from plldb.instrumentation.functions import FunctionRef
from tests.instrumentation.conftest import *  # noqa: F403 - the plldb and app fixtures
from tests.instrumentation.test_functions import with_aliases


def join(plldb: Any, name: str, session_id: str, match: str) -> functions.Result:
    entry = protocol.session_entry(session_id, False, match, 1.0)
    return functions.instrument(plldb.clients, FunctionRef(name, "Fn"), plldb.target(session_id, entry=entry))


def ids_of(app: Any, name: str, qualifier: str | None = None) -> list[str]:
    return [e["id"] for e in json.loads(app.variables(name, qualifier)[protocol.ENV_SESSIONS])]


def plldb_versions(app: Any, name: str) -> list[str]:
    return sorted(
        v for v, description in app.versions(name).items() if description.startswith("plldb session ")
    )


def test_aliases_follow_the_list_and_the_last_session_restores_them_exactly(plldb: Any, app: Any) -> None:
    name = app.create_function(role=app.new_role(), variables={"GREETING": "hi"})
    versions = with_aliases(app, name)
    before = app.snapshot(name)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())

    assert join(plldb, name, alice, "user == 'alice'").ok
    assert join(plldb, name, bob, "user == 'bob'").ok
    live = app.aliases(name)["live"][0]
    assert app.aliases(name) == {"live": (live, {}), "canary": (live, {}), "latest": ("$LATEST", {})}
    assert ids_of(app, name, live) == ids_of(app, name) == [alice, bob]
    assert plldb_versions(app, name) == [live]  # the version alice's list ran is gone
    recorded = json.loads(app.variables(name, live)[protocol.ENV_ALIASES])
    assert recorded == {
        "canary": {"version": versions["first"], "weights": {}},
        "live": {"version": versions["second"], "weights": {versions["first"]: 0.25}},
    }

    left = functions.restore(plldb.clients, FunctionRef(name, "Fn"), alice)
    assert left.ok, left
    now = app.aliases(name)["live"][0]
    assert now != live
    assert ids_of(app, name, now) == ids_of(app, name) == [bob]
    assert plldb_versions(app, name) == [now]
    assert left.message == f"left to the other sessions; aliases canary, live now on version {now}"

    last = functions.restore(plldb.clients, FunctionRef(name, "Fn"), bob)
    assert last.ok, last
    assert app.snapshot(name) == before


def test_a_session_joining_between_anothers_update_and_its_publish_is_in_the_version_the_aliases_run(
    plldb: Any, app: Any
) -> None:
    """Bob has written his entry; before he publishes, Alice joins (and publishes). Lambda refuses Bob's
    stale RevisionId: he publishes the current list, which carries both, and the aliases run it."""
    name = app.create_function(role=app.new_role(), variables={"GREETING": "hi"})
    with_aliases(app, name)
    before = app.snapshot(name)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    lambda_client = plldb.clients.lambda_client
    real_publish = lambda_client.publish_version
    order: list[str] = []

    def publish_after_alice_joined(**arguments: Any) -> Any:
        lambda_client.publish_version = real_publish  # Alice's own publish, and Bob's retries, go through
        order.append("bob publishes")
        assert join(plldb, name, alice, "user == 'alice'").ok
        order.append("alice joined")
        return real_publish(**arguments)

    lambda_client.publish_version = publish_after_alice_joined
    try:
        assert join(plldb, name, bob, "user == 'bob'").ok
    finally:
        lambda_client.publish_version = real_publish
    assert order == ["bob publishes", "alice joined"]
    live = app.aliases(name)["live"][0]
    assert app.aliases(name)["canary"][0] == live
    assert sorted(ids_of(app, name, live)) == sorted(ids_of(app, name)) == sorted([alice, bob])
    assert plldb_versions(app, name) == [live]

    assert functions.restore(plldb.clients, FunctionRef(name, "Fn"), alice).ok
    assert functions.restore(plldb.clients, FunctionRef(name, "Fn"), bob).ok
    assert app.snapshot(name) == before


def test_the_last_session_leaving_while_another_joins_leaves_it_to_the_joiner_with_its_tag_and_policy(
    plldb: Any, app: Any
) -> None:
    """Alice, the only session, reads the function and strips it; Bob's join lands in between. Lambda
    refuses Alice's stale RevisionId, and on the retry she finds Bob there: she leaves instead of
    stripping, so Bob keeps his entry, and the role its "shared" tag and plldb's policy."""
    role = app.new_role()
    name = app.create_function(role=role, variables={"GREETING": "hi"})
    before = app.snapshot(name)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    assert join(plldb, name, alice, "user == 'alice'").ok
    lambda_client = plldb.clients.lambda_client
    real_update = lambda_client.update_function_configuration
    order: list[str] = []

    def update_after_bob_joined(**arguments: Any) -> Any:
        lambda_client.update_function_configuration = real_update
        order.append("alice strips")
        assert join(plldb, name, bob, "user == 'bob'").ok
        order.append("bob joined")
        return real_update(**arguments)

    lambda_client.update_function_configuration = update_after_bob_joined
    try:
        left = functions.restore(plldb.clients, FunctionRef(name, "Fn"), alice)
    finally:
        lambda_client.update_function_configuration = real_update
    assert order == ["alice strips", "bob joined"]
    assert left.ok and left.message == "left to the other sessions", left
    assert ids_of(app, name) == [bob]
    assert app.role_tags(role) == {
        protocol.role_tag_key(plldb.clients.region, name): protocol.SHARED_TAG_VALUE
    }
    assert app.attached_policies(role) == [plldb.clients.policy_arn]

    assert functions.restore(plldb.clients, FunctionRef(name, "Fn"), bob).ok
    assert app.snapshot(name) == before
