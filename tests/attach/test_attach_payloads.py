"""Payloads: events and results inline or as S3 objects behind presigned URLs, errors cut to fit, fragments.

The properties of the message building first, then the session moving large events and results
through the fake helper stack's presigned URLs.
"""

from __future__ import annotations

import json

from attach_fake_api import FakeHelperStack
from attach_support import Runner, run, start
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.local.invocation import Invocation, Outcome
from plldb.local.session import SessionOutcome, session_url
from plldb.local.session.payloads import (
    fit_error,
    fit_json_text,
    inline_response,
    json_size,
    response_text,
    split_fragments,
)

CALLER = "AROAEXAMPLEHELLOROLE1:hello-fn"
DELIVERY = "d1" * 16

# Every kind of character, lone surrogates and characters JSON must escape included.
any_text = st.text(st.characters(codec=None, categories=None), max_size=400)


# --- properties of the message building -----------------------------------------------------------------
@given(st.text(max_size=300), st.integers(min_value=4, max_value=64))
def test_fragments_rejoin_and_each_fits_the_frame(text: str, limit: int) -> None:
    fragments = split_fragments(text, limit)
    assert "".join(fragments) == text
    assert all(len(fragment.encode("utf-8")) <= limit for fragment in fragments)
    assert len(fragments) == 1 or all(fragments)


def test_fragments_at_the_real_frame_quota() -> None:
    text = "€" * 20_000  # 60,000 bytes, three bytes per character
    fragments = split_fragments(text)
    assert [len(f.encode("utf-8")) for f in fragments] == [32_766, 27_234]
    assert split_fragments("small") == ["small"]


@given(any_text, st.integers(min_value=20, max_value=200))
def test_fitted_text_takes_at_most_the_limit_as_json(text: str, limit: int) -> None:
    fitted = fit_json_text(text, limit)
    assert json_size(fitted) <= limit
    if json_size(text) <= limit and text.encode("utf-8", "replace").decode("utf-8") == text:
        assert fitted == text
    else:
        assert fitted.endswith(" ... (truncated)") or fitted != text


@settings(max_examples=60, deadline=None)
@given(
    message=st.text(st.characters(codec=None, categories=None), max_size=40).map(lambda t: t * 2000),
    error_type=any_text,
    frames=st.lists(any_text.map(lambda t: t * 50), max_size=300),
)
def test_any_error_fits_one_inline_message(message: str, error_type: str, frames: list[str]) -> None:
    outcome = Outcome(
        500,
        error={"errorMessage": message, "errorType": error_type, "stackTrace": frames, "requestId": "r-1"},
    )
    response = inline_response(CALLER, DELIVERY, outcome)
    assert response is not None  # errors always travel inline
    assert protocol.message_size(response) <= protocol.INLINE_MESSAGE_LIMIT
    decoded = protocol.decode(protocol.encode(response), protocol.CLIENT_MESSAGE_TYPES)
    assert (decoded["caller"], decoded["deliveryId"], decoded["statusCode"]) == (CALLER, DELIVERY, 500)
    assert decoded["error"]["requestId"] == "r-1"


def test_fitted_error_keeps_the_innermost_frames() -> None:
    frames = [f'  File "app.py", line {n}, in f{n}\n' for n in range(5000)]
    fitted = fit_error({"errorMessage": "boom", "errorType": "ValueError", "stackTrace": frames})
    assert fitted["errorMessage"] == "boom"
    assert fitted["errorType"] == "ValueError"
    assert fitted["stackTrace"][0] == "... (outer frames truncated)"
    assert fitted["stackTrace"][-1] == frames[-1]
    assert fitted["stackTrace"][1:] == frames[-(len(fitted["stackTrace"]) - 1) :]


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=2 * protocol.INLINE_MESSAGE_LIMIT),
    fill=st.sampled_from(["a", "é", "\x01", "\ud800"]),
)
def test_results_go_inline_up_to_the_message_limit_and_by_upload_beyond(size: int, fill: str) -> None:
    payload = json.dumps(fill * (size // 6), ensure_ascii=False)
    response = inline_response(CALLER, DELIVERY, Outcome(200, payload))
    text = response_text(Outcome(200, payload))
    assert text.encode("utf-8", "strict")  # what goes to Lambda is always valid UTF-8
    inline = protocol.result_message(CALLER, DELIVERY, text)
    if protocol.message_size(inline) <= protocol.INLINE_MESSAGE_LIMIT:
        assert response == inline
        protocol.decode(protocol.encode(response), protocol.CLIENT_MESSAGE_TYPES)
    else:
        assert response is None  # the session uploads it


def test_the_inline_limit_is_exact() -> None:
    empty = protocol.message_size(protocol.result_message(CALLER, DELIVERY, '""'))
    fits = '"' + "a" * (protocol.INLINE_MESSAGE_LIMIT - empty) + '"'
    assert inline_response(CALLER, DELIVERY, Outcome(200, fits)) is not None
    assert inline_response(CALLER, DELIVERY, Outcome(200, fits[:-1] + 'a"')) is None


def test_session_url_carries_the_session_and_the_token() -> None:
    assert session_url("wss://abc.execute-api.eu-west-1.amazonaws.com/plldb", "S-1") == (
        "wss://abc.execute-api.eu-west-1.amazonaws.com/plldb?sessionId=S-1"
    )
    assert session_url("ws://127.0.0.1:4510/abc/plldb?x=1", "S-1", "f" * 64) == (
        "ws://127.0.0.1:4510/abc/plldb?x=1&sessionId=S-1&reconnectToken=" + "f" * 64
    )


# --- large events ------------------------------------------------------------------------------------------
def event_length(invocation: Invocation) -> Outcome:
    return Outcome(200, json.dumps(len(invocation.event_json)))


def test_a_large_event_is_read_from_its_presigned_url_and_checked_against_its_digest() -> None:
    event = json.dumps({"blob": "é" * 150_000}, ensure_ascii=False)  # 300 KB: never inline

    async def body(api: FakeHelperStack) -> None:
        attached = start(api, runner=Runner(api.timeline, event_length))
        await attached.until_instrumented()
        key = await api.deliver("req-big", event=None, event_object=event.encode("utf-8"))
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-big"])
        assert await attached.detach() == SessionOutcome(0, None)
        assert [call.event_json for call in attached.runner.calls] == [event]
        assert api.items[key].response == protocol.result_message(*key, json.dumps(len(event)))
        assert api.timeline.values("get") == [protocol.event_object_key(*key)]

    run(body)


def test_an_event_that_does_not_match_its_digest_or_cannot_be_read_is_a_clear_error_never_run() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        tampered = await api.deliver(
            "req-tampered", event=None, event_object=b'{"a": 1}', event_sha256=protocol.sha256_hex(b"other")
        )
        missing = await api.deliver(  # an object that expired before the developer read it
            "req-missing",
            event=None,
            eventUrl=api.payloads.presign("GET", "events/expired"),
            eventSha256=protocol.sha256_hex(b"{}"),
        )
        not_utf8 = await api.deliver("req-bytes", event=None, event_object=b'{"a": "\xff"}')
        await attached.until(lambda: len(attached.timeline.values("on_invocation_stored")) == 3)
        assert await attached.detach() == SessionOutcome(0, None)
        assert attached.runner.calls == []
        reasons = {
            tampered: "the event object does not match its SHA-256 digest",
            missing: "the event object could not be downloaded (HTTP Error 403: Forbidden)",
            not_utf8: "the event is not UTF-8 text",
        }
        for key, reason in reasons.items():
            assert api.items[key].response == protocol.failure_message(
                *key,
                {
                    "errorMessage": f"plldb could not read the event: {reason}",
                    "errorType": "PlldbEventUnavailable",
                    "stackTrace": [],
                },
            )

    run(body)


# --- large results -----------------------------------------------------------------------------------------
def test_a_large_result_is_uploaded_then_answered_by_reference_and_a_medium_one_goes_in_fragments() -> None:
    large = json.dumps({"data": "x" * 500_000})
    medium = json.dumps({"data": "ü" * 20_000}, ensure_ascii=False)  # 40 KB: inline, above the frame quota
    answers = {"req-large": large, "req-medium": medium}

    async def body(api: FakeHelperStack) -> None:
        runner = Runner(api.timeline, lambda invocation: Outcome(200, answers[invocation.request_id]))
        attached = start(api, runner=runner)
        await attached.until_instrumented()
        large_key = await api.deliver("req-large")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-large"])
        medium_key = await api.deliver("req-medium")
        await attached.until(lambda: len(attached.timeline.values("on_invocation_stored")) == 2)
        frames = list(api.connections["conn-1"].frame_sizes)
        assert await attached.detach() == SessionOutcome(0, None)

        data = large.encode("utf-8")
        object_key = protocol.response_object_key(*large_key)
        assert api.messages_about("upload", large_key) == [protocol.upload_message(*large_key, len(data))]
        assert api.payloads.get_object(object_key) == data
        assert api.items[large_key].response == protocol.result_object_message(
            *large_key, protocol.sha256_hex(data), len(data)
        )
        assert [event for event in api.timeline.events if event[0] in ("received", "put")][:4] == [
            ("received", "open"),
            ("received", "upload"),
            ("put", object_key),
            ("received", "response"),
        ]
        assert api.items[medium_key].response == protocol.result_message(*medium_key, medium)
        medium_size = protocol.message_size(protocol.result_message(*medium_key, medium))
        assert medium_size > protocol.WEBSOCKET_FRAME_LIMIT
        assert max(frames) <= protocol.WEBSOCKET_FRAME_LIMIT
        assert sum(frames) == sum(r.size for r in api.received if r.message and r.message["type"] != "close")

    run(body)


def test_results_up_to_lambdas_limit_are_uploaded_and_larger_ones_are_lambdas_own_error() -> None:
    at_limit = '"' + "y" * (protocol.MAX_PAYLOAD_BYTES - 2) + '"'
    answers = {"req-limit": at_limit, "req-over": at_limit[:-1] + 'y"'}

    async def body(api: FakeHelperStack) -> None:
        runner = Runner(api.timeline, lambda invocation: Outcome(200, answers[invocation.request_id]))
        attached = start(api, runner=runner)
        await attached.until_instrumented()
        limit = await api.deliver("req-limit")
        over = await api.deliver("req-over")
        await attached.until(lambda: len(attached.timeline.values("on_invocation_stored")) == 2)
        assert await attached.detach() == SessionOutcome(0, None)
        assert api.payloads.get_object(protocol.response_object_key(*limit)) == at_limit.encode()
        assert api.items[over].response == protocol.failure_message(
            *over,
            {
                "errorMessage": f"Response payload size ({protocol.MAX_PAYLOAD_BYTES + 1} bytes) exceeded maximum "
                f"allowed payload size ({protocol.MAX_PAYLOAD_BYTES} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
                "stackTrace": [],
            },
        )
        assert api.messages_about("upload", over) == []
        assert sorted(attached.timeline.values("on_invocation_answered")) == [
            ("req-limit", 200),
            ("req-over", 500),
        ]

    run(body)


def test_a_refused_upload_is_answered_with_a_clear_error() -> None:
    large = json.dumps("z" * 200_000)

    async def body(api: FakeHelperStack) -> None:
        runner = Runner(api.timeline, lambda invocation: Outcome(200, large))
        attached = start(api, runner=runner)
        await attached.until_instrumented()
        api.payloads.refuse_puts = True  # the presigned PUT is refused (403)
        put_refused = await api.deliver("req-put")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-put"])
        # The layer gave up before the upload was asked for: the routes refuse the upload URL.
        too_late = await api.deliver("req-late", given_up=(protocol.RESPONSE_CODE_TIMEOUT, None))
        await attached.until(lambda: bool(attached.timeline.values("on_invocation_refused")))
        assert await attached.detach() == SessionOutcome(0, None)

        assert api.items[put_refused].response == protocol.failure_message(
            *put_refused,
            {
                "errorMessage": "plldb could not send the result: HTTP Error 403: Forbidden",
                "errorType": "PlldbResponseUnavailable",
                "stackTrace": [],
            },
        )
        late = "the function stopped waiting at its deadline; this answer came too late"
        assert api.messages_about("response", too_late) == [
            protocol.failure_message(
                *too_late,
                {
                    "errorMessage": f"plldb could not send the result: {late}",
                    "errorType": "PlldbResponseUnavailable",
                    "stackTrace": [],
                },
            )
        ]
        assert attached.timeline.values("on_invocation_refused") == [("req-late", "RequestClosed", late)]
        assert api.payloads.puts == []

    run(body)


def test_an_upload_request_lost_with_its_connection_is_asked_again_after_reconnecting() -> None:
    large = json.dumps("w" * 200_000)

    async def body(api: FakeHelperStack) -> None:
        attached = start(api, runner=Runner(api.timeline, lambda invocation: Outcome(200, large)))
        await attached.until_instrumented()
        api.cut_on = "upload"
        key = await api.deliver("req-upload")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-upload"])
        assert await attached.detach() == SessionOutcome(0, None)
        assert [r.connection_id for r in api.received if r.message and r.message["type"] == "upload"] == [
            "conn-1",
            "conn-2",
        ]
        data = large.encode()
        assert api.payloads.get_object(protocol.response_object_key(*key)) == data
        assert api.items[key].response == protocol.result_object_message(
            *key, protocol.sha256_hex(data), len(data)
        )

    run(body)
