"""The pieces of observe, match and sample that decide alone: the layer's routing, the PLLDB_SESSIONS
format, attach's option checks and the comparison of a local outcome with the cloud's."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from plldb import protocol
from plldb.bootstrap.cloudformation.layer import routing
from plldb.errors import PlldbError
from plldb.local import session_options

A = "9ada04b8-639d-476f-af6a-40c89714b812"
B = "1c0ffee0-639d-476f-af6a-40c89714b812"


def draws(*values: float) -> Iterator[float]:
    yield from values
    raise AssertionError("the router drew more often than expected")


def router(entries: list[protocol.SessionEntry], values: tuple[float, ...] = ()) -> routing.Router:
    routes, problems = routing.compile_routes(entries)
    assert problems == []
    source = draws(*values)
    return routing.Router(routes, draw=lambda: next(source))


def event(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_the_first_matching_entry_takes_the_invocation_and_the_rest_run_in_the_cloud() -> None:
    chosen = router(
        [
            protocol.session_entry(A, False, "headers.\"x-plldb-debug\" == 'a'", 1.0),
            protocol.session_entry(B, False, "user == 'b'", 1.0),
        ]
    )
    assert chosen.choose(event(headers={"x-plldb-debug": "a"}, user="b")).session_id == A  # type: ignore[union-attr]
    assert chosen.choose(event(headers={}, user="b")).session_id == B  # type: ignore[union-attr]
    assert chosen.choose(event(headers={"x-plldb-debug": "c"}, user="c")) is None
    assert chosen.choose(b"not json") is None


def test_sample_is_decided_by_the_draw_before_the_match() -> None:
    sampled = router([protocol.session_entry(A, True, None, 0.25)], values=(0.25, 0.2499))
    assert sampled.choose(event()) is None  # 0.25 is not < 0.25
    assert sampled.choose(event()).observe is True  # type: ignore[union-attr]


def test_a_full_sample_never_draws() -> None:
    assert router([protocol.session_entry(A, True, None, 1.0)]).choose(event()).session_id == A  # type: ignore[union-attr]


def test_an_expression_failing_on_an_event_is_no_match_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    failing = router([protocol.session_entry(A, False, "abs(name)", 1.0)])
    with caplog.at_level(logging.WARNING, "plldb.layer"):
        assert failing.choose(event(name="text")) is None
        assert failing.choose(event(name="again")) is None
    assert [r.getMessage() for r in caplog.records] == [
        "plldb: the match of session 9ada04b8 failed on an event and counts as no match "
        "(In function abs(), invalid type for value: text, expected one of: ['number'], received: \"string\")"
    ]


def test_an_expression_raising_anything_on_an_event_is_no_match_never_the_layers_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A slice step of 0 compiles but raises ValueError on a list: the invocation goes to the next route."""
    routes = router(
        [protocol.session_entry(A, False, "Records[::0]", 1.0), protocol.session_entry(B, False, None, 1.0)]
    )
    with caplog.at_level(logging.WARNING, "plldb.layer"):
        chosen = routes.choose(event(Records=[1, 2]))
    assert chosen is not None and chosen.session_id == B
    assert [r.getMessage() for r in caplog.records] == [
        "plldb: the match of session 9ada04b8 failed on an event and counts as no match (slice step cannot be zero)"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[", "PLLDB_SESSIONS is not JSON"),
        ("[]", "PLLDB_SESSIONS must be a non-empty JSON list"),
        ('[{"id": "x"}]', "PLLDB_SESSIONS entry 0 must be an object with exactly id, observe, match, sample"),
        (
            f'[{{"id":"{A}","observe":1,"match":null,"sample":1}}]',
            "PLLDB_SESSIONS entry 0: observe must be true or false",
        ),
        (
            f'[{{"id":"{A}","observe":true,"match":null,"sample":0}}]',
            "PLLDB_SESSIONS entry 0: sample must be a number greater than 0 and at most 1",
        ),
        (
            f'[{{"id":"{A}","observe":true,"match":null,"sample":1}},{{"id":"{A}","observe":true,"match":null,"sample":1}}]',
            "PLLDB_SESSIONS entry 1: session 9ada04b8 is listed twice",
        ),
        (
            f'[{{"id":"{A}","observe":false,"match":"a ==","sample":1}}]',
            "PLLDB_SESSIONS of session 9ada04b8 is not a JMESPath expression (Invalid jmespath expression: Incomplete expression)",
        ),
        ("[" * 5000, "PLLDB_SESSIONS is not JSON"),  # too deeply nested to parse: refused, not a crash
        (
            f'[{{"id":"{A}","observe":false,"match":"@.[@,@,@,@][].[@,@,@,@][].[@,@,@,@][]","sample":1}}]',
            "the match of session 9ada04b8 in PLLDB_SESSIONS: it has 3 multi-select expressions ([a, b] or "
            "{a: b}); at most 2 are allowed, so that matching stays cheap for every invocation",
        ),
    ],
)
def test_an_invalid_sessions_variable_is_named(text: str, problem: str) -> None:
    assert routing.routes_from_environment(text)[1] == [problem]


def test_the_sessions_variable_is_compact_json_in_order() -> None:
    entries = [protocol.session_entry(B, False, "a == 'b'", 0.5), protocol.session_entry(A, True, None, 1.0)]
    text = protocol.sessions_variable(entries)
    assert text == (
        f'[{{"id":"{B}","observe":false,"match":"a == \'b\'","sample":0.5}},'
        f'{{"id":"{A}","observe":true,"match":null,"sample":1.0}}]'
    )
    assert protocol.parse_sessions(text) == entries


def test_observed_outcome_carries_the_result_the_error_or_a_digest() -> None:
    assert routing.observed_outcome(b'{"a": 1}', None, 12.3456) == {
        "durationMs": 12.346,
        "result": '{"a": 1}',
    }
    error = {"errorMessage": "no", "errorType": "ValueError", "requestId": "r", "stackTrace": []}
    assert routing.observed_outcome(None, error, 1.0) == {"durationMs": 1.0, "error": error}
    big = b"[" + b"1," * 20000 + b"1]"
    assert routing.observed_outcome(big, None, 2.0) == {
        "durationMs": 2.0,
        "resultSize": len(big),
        "resultSha256": protocol.sha256_hex(big),
    }
    for observed in (
        routing.observed_outcome(b"1", None, 1.0),
        routing.observed_outcome(None, error, 1.0),
        routing.observed_outcome(big, None, 1.0),
    ):
        protocol.validate_observed(observed)


def test_attach_options_are_checked_with_one_line_each() -> None:
    assert session_options.session_options(observe=False, sample=None, match=None, match_token=False) is None
    observe = session_options.session_options(observe=True, sample=0.1, match=None, match_token=False)
    assert observe == session_options.SessionOptions(observe=True, match=None, sample=0.1)
    assert observe.entry(A) == {"id": A, "observe": True, "match": None, "sample": 0.1}
    assert not observe.shared
    token = session_options.session_options(observe=False, sample=None, match=None, match_token=True)
    assert token is not None and token.token is not None and len(token.token) == 32
    assert token.match == f"headers.\"x-plldb-debug\" == '{token.token}'"
    assert token.shared
    cases = [
        (
            dict(observe=False, sample=0.5, match=None, match_token=False),
            "--sample needs --observe, --match or --match-token.",
        ),
        (
            dict(observe=True, sample=1.5, match=None, match_token=False),
            "--sample 1.5 is not a fraction of invocations.",
        ),
        (
            dict(observe=False, sample=None, match="a", match_token=True),
            "--match and --match-token cannot be used together.",
        ),
        (
            dict(observe=False, sample=None, match="a ==", match_token=False),
            "--match 'a ==' is not a JMESPath expression: Invalid jmespath expression: Incomplete expression.",
        ),
    ]
    for arguments, message in cases:
        with pytest.raises(PlldbError) as raised:
            session_options.session_options(**arguments)  # type: ignore[arg-type]
        assert raised.value.message == message


@pytest.mark.parametrize(
    ("local", "observed", "difference"),
    [
        ((True, '{"a": 1, "b": 2}', None), {"result": '{"b":2,"a":1}', "durationMs": 1}, None),
        (
            (True, '{"a": 1}', None),
            {"result": '{"a": 2}', "durationMs": 1},
            'cloud result {"a": 2} | local result {"a": 1}',
        ),
        (
            (False, None, {"errorType": "KeyError", "errorMessage": "'x'"}),
            {"result": "1", "durationMs": 1},
            "cloud result 1 | local KeyError: 'x'",
        ),
        (
            (True, "1", None),
            {"error": {"errorType": "ValueError", "errorMessage": "no"}, "durationMs": 1},
            "cloud ValueError: no | local result 1",
        ),
        (
            (False, None, {"errorType": "ValueError", "errorMessage": "no"}),
            {
                "error": {"errorType": "ValueError", "errorMessage": "no", "stackTrace": ["elsewhere"]},
                "durationMs": 1,
            },
            None,
        ),
        (
            (True, "[1]", None),
            {"resultSize": 3, "resultSha256": protocol.sha256_hex(b"[1]"), "durationMs": 1},
            None,
        ),
    ],
)
def test_a_local_outcome_is_compared_with_the_clouds(
    local: tuple[bool, str | None, dict[str, str] | None], observed: dict[str, object], difference: str | None
) -> None:
    assert session_options.compare(*local, observed) == difference


def test_a_match_that_could_grow_exponentially_is_refused_by_attach_in_one_line() -> None:
    costly = "@.[@,@][].[@,@][].[@,@][]"
    with pytest.raises(PlldbError) as refused:
        session_options.session_options(observe=False, sample=None, match=costly, match_token=False)
    assert refused.value.one_line() == (
        f"--match {costly!r} is refused: it has 3 multi-select expressions ([a, b] or {{a: b}}); at most 2 are "
        "allowed, so that matching stays cheap for every invocation. Write a simpler expression."
    )
