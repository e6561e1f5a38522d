"""What a terminal shows for the bytes a program writes: a small model of a VT100-style screen.

It interprets what rich and plain output use (printable text with the terminal's own wrapping at the
last column, CR, LF, backspace, tab, CSI cursor movement, erase in line and display, SGR, cursor
visibility) and keeps every row ever written (the scrollback with the visible screen below it), so a
test reads "what the developer saw" instead of matching raw escape sequences. Sequences it does not
know are recorded in ``unknown``, so a test can insist on none.
"""

from __future__ import annotations

import codecs
import re

TOKEN = re.compile(
    # A C0 control inside a sequence (an echoed Ctrl-C) is executed and the sequence goes on.
    r"(?P<csi>\x1b\[(?P<parameters>[?0-9;\x00-\x1a\x1c-\x1f]*)(?P<final>[@-~]))"
    r"|(?P<osc>\x1b\][^\x07\x1b]*(?:\x07|\x1b\\))"
    r"|(?P<escape>\x1b[()][0-9A-Za-z]|\x1b[=>78])"
    r"|(?P<control>[\x00-\x1a\x1c-\x1f\x7f])"
    r"|(?P<text>[^\x00-\x1f\x7f]+)"
)
INCOMPLETE_TAIL = 64  # an escape sequence cut between two reads is never longer than this
IGNORED_PRIVATE_MODES = ("?2004", "?1049", "?1", "?7", "?12")


class Screen:
    """Rows of text with a cursor; rows above the visible window are the scrollback."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows: list[str] = [""]
        self.row = 0
        self.column = 0
        self.cursor_visible = True
        self.cursor_hidden_count = 0
        self.unknown: list[str] = []
        self.watches: list[Watch] = []
        self.continued: set[int] = set()  # rows the terminal wrapped onto the next one
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._wrap_next = False  # the cursor is past the last column: the next character wraps

    # -- feeding ---------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        escape = text.rfind("\x1b", max(0, len(text) - INCOMPLETE_TAIL))
        if escape >= 0:
            match = TOKEN.match(text, escape)
            if match is None or match.lastgroup == "control":
                text, self._pending = text[:escape], text[escape:]  # completed by the next read
        self._touch()
        index = 0
        while index < len(text):
            match = TOKEN.match(text, index)
            if match is None:  # an escape sequence this model does not know
                self.unknown.append(repr(text[index : index + 8]))
                index += 1
                continue
            index = match.end()
            kind = match.lastgroup
            if kind == "text":
                self._text(match.group("text"))
            elif kind == "control":
                self._control(match.group("control"))
            elif kind == "csi":
                parameters = match.group("parameters")
                for control in re.findall(r"[\x00-\x1f]", parameters):
                    self._control(control)
                self._csi(re.sub(r"[\x00-\x1f]", "", parameters), match.group("final"))

    def _touch(self) -> None:
        for watch in self.watches:
            watch.lowest = min(watch.lowest, self.row)

    def _text(self, run: str) -> None:
        while run:
            if self._wrap_next:
                self._wrap_next = False
                self.column = 0
                self.continued.add(self.row)
                self._line_feed()
            line = self.rows[self.row]
            if len(line) < self.column:
                line += " " * (self.column - len(line))
            piece, run = run[: self.columns - self.column], run[self.columns - self.column :]
            self.rows[self.row] = line[: self.column] + piece + line[self.column + len(piece) :]
            self.column += len(piece)
            if self.column >= self.columns:
                self.column = self.columns - 1
                self._wrap_next = True

    def _control(self, char: str) -> None:
        if char == "\r":
            self.column, self._wrap_next = 0, False
        elif char == "\n":
            self._line_feed()
        elif char == "\b":
            self.column, self._wrap_next = max(0, self.column - 1), False
        elif char == "\t":
            self.column = min(self.columns - 1, (self.column // 8 + 1) * 8)

    def _line_feed(self) -> None:
        self._wrap_next = False
        self.row += 1
        if len(self.rows) <= self.row:
            self.rows.append("")

    def _csi(self, parameters: str, final: str) -> None:
        if parameters.startswith("?"):
            if parameters == "?25" and final == "l":
                self.cursor_visible = False
                self.cursor_hidden_count += 1
            elif parameters == "?25" and final == "h":
                self.cursor_visible = True
            elif parameters not in IGNORED_PRIVATE_MODES:
                self.unknown.append(f"CSI {parameters}{final}")
            return
        numbers = [int(part) if part else 0 for part in parameters.split(";")] if parameters else []
        first = numbers[0] if numbers else 0
        if final == "m":
            return
        self._wrap_next = False
        if final == "A":
            self.row = max(0, self.row - max(first, 1))
            self._touch()
        elif final == "B":
            for _ in range(max(first, 1)):
                self._line_feed()
        elif final == "C":
            self.column = min(self.columns - 1, self.column + max(first, 1))
        elif final == "D":
            self.column = max(0, self.column - max(first, 1))
        elif final == "G":
            self.column = min(self.columns - 1, max(first, 1) - 1)
        elif final == "K":
            line = self.rows[self.row]
            if first == 0:
                self.rows[self.row] = line[: self.column]
            elif first == 1:
                self.rows[self.row] = " " * min(self.column + 1, len(line)) + line[self.column + 1 :]
            else:
                self.rows[self.row] = ""
                self.continued.discard(self.row)
        elif final == "J" and first == 0:
            self.rows[self.row] = self.rows[self.row][: self.column]
            del self.rows[self.row + 1 :]
        else:
            self.unknown.append(f"CSI {parameters}{final}")

    # -- reading ---------------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """Every row, scrollback included, without trailing blanks; empty rows at the end dropped."""
        rows = [row.rstrip() for row in self.rows]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def logical_lines(self) -> list[str]:
        """Like ``lines``, with each row the terminal wrapped joined to the row it continues on."""
        joined: list[str] = []
        carry = ""
        for index, row in enumerate(self.rows):
            if index in self.continued:
                carry += row
                continue
            joined.append((carry + row).rstrip())
            carry = ""
        if carry:
            joined.append(carry.rstrip())
        while joined and not joined[-1]:
            joined.pop()
        return joined


class Watch:
    """Which rows of a screen changed since the watch last looked: scanning them is enough to see
    everything new, however long the scrollback is."""

    def __init__(self, screen: Screen) -> None:
        self.screen = screen
        self.lowest = 0  # the first look sees every row
        screen.watches.append(self)

    def changed_rows(self) -> list[str]:
        start, self.lowest = self.lowest, self.screen.row
        return self.screen.rows[start:]

    def close(self) -> None:
        self.screen.watches.remove(self)
