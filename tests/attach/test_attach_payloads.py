"""Properties of the message building: fragments, fitted errors, inline versus chunked answers."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.local.session import (
    InvocationOutcome,
    build_response_message,
    fit_error,
    fit_json_text,
    json_size,
    read_event_json,
    session_url,
    split_fragments,
)

# Every kind of character, lone surrogates and characters JSON must escape included.
any_text = st.text(st.characters(codec=None, categories=None), max_size=400)


class DictChunks:
    """Chunk items kept in a dict: lets the properties run thousands of cases without a table."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def read(self, key: str) -> bytes | None:
        return self.items.get(key)

    def write(self, key: str, data: bytes) -> None:
        self.items[key] = data


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
    outcome = InvocationOutcome(
        500,
        error={"errorMessage": message, "errorType": error_type, "stackTrace": frames, "requestId": "r-1"},
    )
    response = build_response_message("r-1", "d-1", outcome, DictChunks())
    assert protocol.message_size(response) <= protocol.INLINE_MESSAGE_LIMIT
    decoded = protocol.decode(protocol.encode(response))
    assert (decoded["requestId"], decoded["deliveryId"]) == ("r-1", "d-1")
    assert decoded["error"]["requestId"] == "r-1"


def test_fitted_error_keeps_the_innermost_frames() -> None:
    frames = [f'  File "app.py", line {n}, in f{n}\n' for n in range(5000)]
    fitted = fit_error({"errorMessage": "boom", "errorType": "ValueError", "stackTrace": frames})
    assert fitted["errorMessage"] == "boom"
    assert fitted["errorType"] == "ValueError"
    assert fitted["stackTrace"][0] == "... (outer frames truncated)"
    assert fitted["stackTrace"][-1] == frames[-1]
    assert fitted["stackTrace"][1:] == frames[-(len(fitted["stackTrace"]) - 1) :]


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 * protocol.CHUNK_SIZE), fill=st.sampled_from(["a", "é", "\x01"])
)
def test_answers_go_inline_up_to_the_limit_and_by_chunks_beyond(size: int, fill: str) -> None:
    payload = json.dumps(fill * (size // 6), ensure_ascii=False)
    chunks = DictChunks()
    response = build_response_message("req", "d-1", InvocationOutcome(200, payload), chunks)
    inline = {
        "type": "response",
        "requestId": "req",
        "deliveryId": "d-1",
        "statusCode": 200,
        "payload": payload,
    }
    if protocol.message_size(inline) <= protocol.INLINE_MESSAGE_LIMIT:
        assert response == inline
        assert chunks.items == {}
    else:
        data = payload.encode("utf-8")
        count = len(protocol.split_payload(data))
        assert response == {
            "type": "response",
            "requestId": "req",
            "deliveryId": "d-1",
            "statusCode": 200,
            "payloadChunks": count,
            "payloadSha256": protocol.sha256_hex(data),
        }
        # Response chunks are keyed by the delivery they answer, so an earlier round cannot overwrite them.
        assert sorted(chunks.items) == sorted(f"req#response#d-1#{index}" for index in range(count))
        # The same reassembly the layer does gives back the exact payload.
        invoke = {"requestId": "req", "eventChunks": count, "eventSha256": protocol.sha256_hex(data)}
        renamed = {key.replace("#response#d-1#", "#event#"): value for key, value in chunks.items.items()}
        chunks.items = renamed
        assert read_event_json(invoke, chunks) == payload
    protocol.decode(protocol.encode(response))


def test_session_url_carries_the_session_and_the_token() -> None:
    assert session_url("wss://abc.execute-api.eu-west-1.amazonaws.com/plldb", "S-1") == (
        "wss://abc.execute-api.eu-west-1.amazonaws.com/plldb?sessionId=S-1"
    )
    assert session_url("ws://127.0.0.1:4510/abc/plldb?x=1", "S-1", "f" * 64) == (
        "ws://127.0.0.1:4510/abc/plldb?x=1&sessionId=S-1&reconnectToken=" + "f" * 64
    )
