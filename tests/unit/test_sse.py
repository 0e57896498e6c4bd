from hypothesis import given
from hypothesis import strategies as st

from tokenaddons.providers.sse import SSEParser, frame, is_sse

STREAM = (b"event: message_start\ndata: {\"a\": 1}\n\n"
          b": keep-alive comment\n\n"
          b"event: delta\r\ndata: line one\r\ndata: line two\r\n\r\n"
          b"data: [DONE]\n\n")


def test_events_and_raw_bytes_round_trip():
    events = SSEParser().feed(STREAM)
    assert [e.event for e in events] == ["message_start", None, "delta", None]
    assert events[0].json() == {"a": 1}
    assert events[2].data == "line one\nline two"
    assert events[3].json() is None and events[3].data == "[DONE]"
    assert b"".join(e.raw for e in events) == STREAM


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts):
    parser = SSEParser()
    bounds = sorted(set(cuts)) + [len(STREAM)]
    events, start = [], 0
    for end in bounds:
        events += parser.feed(STREAM[start:end])
        start = end
    assert b"".join(e.raw for e in events) == STREAM
    assert [e.data for e in events] == [e.data for e in SSEParser().feed(STREAM)]


def test_unfinished_event_is_kept():
    parser = SSEParser()
    assert parser.feed(b"data: {\"x\"") == []
    assert parser.rest() == b"data: {\"x\""


def test_frame_and_content_type():
    assert frame({"a": 1}, "ping") == b'event: ping\ndata: {"a":1}\n\n'
    assert frame("[DONE]") == b"data: [DONE]\n\n"
    assert is_sse("text/event-stream; charset=utf-8")
    assert not is_sse("application/json") and not is_sse(None)
