"""A handler's output, cut into lines as it comes, and the marker that ends each invocation's share.

A worker's stdout and stderr are pipes read in pieces; the pieces become lines here, so a handler
printing 10 MB, or one line without an end, never has to be held whole. After each invocation the
worker writes a marker line (``worker_main.sync_marker``) on both pipes; ``LineSplitter`` reports
where it was, so the process knows every line of that invocation has been delivered.
"""

from __future__ import annotations

from collections.abc import Callable

OutputCallback = Callable[[str, str, str, str], None]  # (logical id, request id, "stdout"/"stderr", line)
LINE_PIECE_BYTES = 64 * 1024  # a longer line is delivered in pieces of this size


class LineSplitter:
    """Cuts a byte stream into lines (long ones into pieces) and spots the worker's sync marker.

    ``feed`` returns the complete lines found, without their newline, and None where a marker was.
    A marker may follow text without a newline; that text is delivered as a line of its own.
    """

    def __init__(self, marker: bytes, piece_bytes: int = LINE_PIECE_BYTES) -> None:
        self._marker = marker
        self._piece_bytes = piece_bytes
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes | None]:
        buffer = self._pending + data if self._pending else data
        found: list[bytes | None] = []
        position = 0
        while True:
            newline = buffer.find(b"\n", position)
            if newline < 0:
                break
            line = buffer[position : newline + 1]
            position = newline + 1
            if line.endswith(self._marker):
                head = line[: -len(self._marker)]
                if head:
                    found.append(head)
                found.append(None)
            else:
                found.append(line[:-1])
        rest = buffer[position:]
        if len(rest) > self._piece_bytes:
            keep = len(self._marker) - 1  # could be the start of a marker
            found.append(rest[:-keep])
            rest = rest[-keep:]
        self._pending = rest
        return found

    def finish(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


def line_text(line: bytes) -> str:
    """A line as text: UTF-8 (undecodable bytes replaced), without a trailing carriage return.

    Public: the process's pumps hand lines to the output callback with it.
    """
    text = line.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text
