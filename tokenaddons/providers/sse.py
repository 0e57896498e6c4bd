"""Incremental server-sent-events parsing and framing.

Streams arrive in arbitrary chunks; `SSEParser.feed` returns the complete
events seen so far and keeps the remainder for the next chunk. It is linear in
the stream: a search for the end of an event resumes where the last one
stopped, so a 4 MB event arriving in 4 KB pieces is not rescanned each time.
An event's JSON is parsed at most once, however many taps read it.
"""
from __future__ import annotations

import re
from typing import Any

from tokenaddons.engines import jsonio

# An event ends at a blank line, in any newline style; the leftmost match wins.
_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_UNPARSED = object()


class Event:
    __slots__ = ("event", "data", "raw", "_json")

    def __init__(self, event: str | None, data: str, raw: bytes, parsed: Any = _UNPARSED):
        self.event = event
        self.data = data
        self.raw = raw  # the event's exact bytes, terminating blank line included
        self._json = parsed

    @classmethod
    def make(cls, data: Any, event: str | None = None) -> Event:
        """A new event carrying `data` (JSON-serialized unless a string)."""
        text = data if isinstance(data, str) else jsonio.dumps_str(data)
        return cls(event, text, frame(text, event), _UNPARSED if isinstance(data, str) else data)

    def json(self) -> Any:
        """The data parsed as JSON, or None ([DONE], keep-alives, garbage).

        The same object is returned every time: a tap that changes it must
        build a new event (`Event.make`) for the change to reach the client."""
        if self._json is _UNPARSED:
            if not self.data or self.data == "[DONE]":
                self._json = None
            else:
                try:
                    self._json = jsonio.loads(self.data)
                except ValueError:
                    self._json = None
        return self._json

    def __repr__(self) -> str:
        return f"Event({self.event!r}, {self.data[:60]!r})"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def parse_event(raw: bytes) -> Event:
    name = None
    data: list[str] = []
    text = raw.decode("utf-8", "replace")
    # SSE lines end in \r\n, \r or \n only (str.splitlines would also split at
    # U+2028 and other characters a JSON string may hold as they are)
    for line in _LINE_BREAK.split(text) if "\r" in text else text.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    return Event(name, "\n".join(data), raw)


class SSEParser:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.scan = 0  # where the search for the next blank line resumes
        self.cr = False  # seen a \r: only then look for \r\n\r\n and \r\r too

    def feed(self, chunk: bytes) -> list[Event]:
        self.buf += chunk
        self.cr = self.cr or b"\r" in chunk
        events = []
        pos = 0
        # a separator may straddle the old end and the new chunk: back up 3 bytes
        search = max(0, self.scan - 3)
        while (end := self._blank_line(search)) >= 0:
            events.append(parse_event(bytes(self.buf[pos:end])))
            pos = search = end
        if pos:
            del self.buf[:pos]  # cheap: bytearray drops its front in place
        self.scan = len(self.buf)
        return events

    def _blank_line(self, start: int) -> int:
        """The end of the first blank line at or after `start`, or -1. A byte
        search (memchr speed): a regex alternation is ten times slower on a 4 MB event."""
        if not self.cr:
            at = self.buf.find(b"\n\n", start)
            return at + 2 if at >= 0 else -1
        m = _BLANK_LINE.search(self.buf, start)
        return m.end() if m else -1

    def rest(self) -> bytes:
        """Bytes of an unfinished last event (a stream cut mid-event)."""
        return bytes(self.buf)


def frame(data: Any, event: str | None = None) -> bytes:
    """One SSE event; `data` is JSON-serialized unless it is already a string."""
    text = data if isinstance(data, str) else jsonio.dumps_str(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def is_sse(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == "text/event-stream"
