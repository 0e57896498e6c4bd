"""Capture: every exchange saved in mitmproxy's flow format, as it went upstream.

mitmproxy's own `-w` saves the flow as the client saw it: an answer whose
pseudonyms scrub restored holds the real values again. A captured file must
never hold a value the scrubber removed, so this addon (last in the bundle,
after the exchange has settled and its summary is in `flow.metadata`) saves a
copy with:

- the request as it went upstream (or, answered here, as it would have gone:
  the body the addons left), and no body at all for a request scrub refused
  (what it held is exactly what must not be written anywhere);
- the answer as it came back, before placeholders were restored (a streamed
  one as upstream sent it, every event);
- credentials replaced by a digest that still tells callers apart;
- of the metadata, only the exchange's summary.

`tokenaddons replay` (and `mitmdump -r`) read the file back. The event loop
only takes the flow's state; copying, cleaning, serializing and writing happen
on one worker thread, in order.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mitmproxy import ctx, exceptions, http, io

from tokenaddons.engines import jsonio
from tokenaddons.engines.credentials import AUTH_HEADERS, QUERY_KEY, redacted
from tokenaddons.exchange import METADATA_KEY, WITHHELD_KEY, Exchange

log = logging.getLogger(__name__)



class Capture:
    after_send = True  # (dispatch.py)

    def __init__(self) -> None:
        self.file: BinaryIO | None = None
        self.writer: io.FlowWriter | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.path: str | None = None
        self.saved = 0

    def load(self, loader) -> None:
        loader.add_option("capture_path", str, "",
                          "Save every exchange to this file in mitmproxy's flow format, as it went upstream: "
                          "scrubbed requests, answers before placeholders are restored, credentials redacted "
                          "(prefix with + to append). `tokenaddons replay FILE` reads it back.")

    def configure(self, updated) -> None:
        if "capture_path" not in updated or ctx.options.capture_path == self.path:
            return
        self.done()
        spec = ctx.options.capture_path
        if not spec:
            return
        path = Path(spec.removeprefix("+")).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "ab" if spec.startswith("+") else "wb")
        except OSError as e:
            raise exceptions.OptionsError(f"capture_path: cannot write {path}: {e.strerror or e}") from None
        self.writer = io.FlowWriter(self.file)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tokenaddons-capture")
        self.path = spec
        log.info("tokenaddons capture: saving exchanges to %s", path)

    def done(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            log.info("tokenaddons capture: %d exchange(s) saved to %s", self.saved, self.path)
        if self.file is not None:
            self.file.close()
        self.file = self.writer = self.pool = self.path = None

    def response(self, flow: http.HTTPFlow) -> None:
        self._capture(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._capture(flow)

    def _capture(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if self.pool is None or ex is None or flow.websocket is not None or ex.state.get("captured"):
            return  # (not ours: nothing of it is kept; a WebSocket's messages are not scrubbed)
        ex.state["captured"] = True
        # on the event loop only the flow's state is taken (the live flow moves on);
        # the copy is made, cleaned and written on the writer thread
        try:
            state = flow.get_state()
        except Exception:
            log.exception("tokenaddons capture: could not capture %s", flow.request.path)
            return
        self.pool.submit(self._write, state, Sent(ex.answered_by == "scrub", ex.body if ex.dirty else None,
                                                  ex.upstream_body))

    def _write(self, state: dict, sent: Sent) -> None:
        try:
            self.writer.add(as_sent(state, sent))
            self.file.flush()  # a proxy killed later keeps every exchange written so far
            self.saved += 1
        except Exception:
            log.exception("tokenaddons capture: could not write to %s", self.path)


@dataclass(frozen=True)
class Sent:
    """What the exchange knows that the flow does not: what really went and came back."""

    refused_by_scrub: bool  # its body holds what scrub must not let be written
    body: Any  # the request JSON as the addons left it, when it was not serialized (answered here)
    upstream_body: bytes | None  # the answer as upstream sent it, before placeholders were restored


def as_sent(state: dict, sent: Sent) -> http.HTTPFlow:
    """The flow (from its state) as it went upstream and came back, nothing
    scrubbed put back, no credential kept."""
    state["backup"] = None  # an earlier version of the flow (an edit, a replay) is no part of it
    # only the exchange's own summary: whatever else was put in the metadata is unknown content
    state["metadata"] = {k: v for k, v in state["metadata"].items() if k == METADATA_KEY}
    copy = http.HTTPFlow.from_state(state)
    req = copy.request
    if sent.refused_by_scrub:
        req.content = b""
        copy.metadata[WITHHELD_KEY] = "request body: refused by scrub"
    elif sent.body is not None:  # answered here before the body was serialized: as it would have gone
        req.content = jsonio.dumps(sent.body)
    for name in AUTH_HEADERS:  # each value apart: two credentials stay two callers
        if name in req.headers:
            req.headers.set_all(name, [redacted(v) for v in req.headers.get_all(name)])
    if QUERY_KEY in req.query:
        req.query.set_all(QUERY_KEY, [redacted(v) for v in req.query.get_all(QUERY_KEY)])
    resp = copy.response
    if resp is not None and sent.upstream_body is not None:
        resp.content = sent.upstream_body  # as upstream sent it: placeholders not yet restored
    return copy
