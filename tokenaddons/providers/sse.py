"""Incremental server-sent-events parsing and framing.

Streams arrive in arbitrary chunks; `SSEParser.feed` returns the complete
events seen so far and keeps the remainder for the next chunk.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    event: str | None
    data: str
    raw: bytes  # the event's exact bytes, terminating blank line included

    def json(self) -> Any:
        """The data parsed as JSON, or None ([DONE], keep-alives, garbage)."""
        if not self.data or self.data == "[DONE]":
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def _split_event(buf: bytes) -> tuple[bytes, bytes] | None:
    """Split off the first complete event (ended by a blank line, any newline style)."""
    best = None
    for sep in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        i = buf.find(sep)
        if i != -1 and (best is None or i < best[0]):
            best = (i, len(sep))
    if best is None:
        return None
    end = best[0] + best[1]
    return buf[:end], buf[end:]


def parse_event(raw: bytes) -> Event:
    name = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
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
        self.buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self.buf += chunk
        events = []
        while (split := _split_event(self.buf)) is not None:
            raw, self.buf = split
            events.append(parse_event(raw))
        return events

    def rest(self) -> bytes:
        """Bytes of an unfinished last event (a stream cut mid-event)."""
        return self.buf


def frame(data: Any, event: str | None = None) -> bytes:
    """One SSE event; `data` is JSON-serialized unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def is_sse(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() == "text/event-stream"
