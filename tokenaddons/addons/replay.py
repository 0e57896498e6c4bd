"""Replay: captured traffic through the bundle, answered from the captured answers.

Loaded after the bundle (`bundle.replay_addons()`, which `tokenaddons replay`
runs). It hands the captured requests to mitmproxy's client playback, one at a
time in the order they were made, so each passes the whole pipeline as if a
client sent it now; and the captured answers to mitmproxy's server playback,
which answers each request that the pipeline lets through from its own
captured answer, so nothing goes out.

Pairing is by a tag header (`x-tokenaddons-replay`) and never by the body:
compression, scrubbing or any other setting may change the body, and the
request must still get its own answer. A request the pipeline answers itself
(a cache hit, a budget refusal) loses its tag before server playback runs, so
its captured answer is never played. A request the settings send to another
path than the captured one has no captured answer: it is answered with a 502
here rather than let out; one sent to another host or path of the same API
(another base URL, route's relay) is answered from its captured answer, and
if route chose another model, that answer is billed at that model's prices
(a `replay`/`repriced` decision row holds the difference). mitmproxy stops
when every request has been played.
"""
from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import ctx, exceptions, http, io
from mitmproxy.utils import asyncio_utils

from tokenaddons.addons.store import Store
from tokenaddons.engines import jsonio, pricing
from tokenaddons.errors import refuse
from tokenaddons.exchange import WITHHELD_KEY, Exchange, handled

log = logging.getLogger(__name__)

TAG = "x-tokenaddons-replay"


def replayable(flow) -> str | None:
    """Why a captured flow cannot be replayed, or None if it can."""
    if not isinstance(flow, http.HTTPFlow):
        return "not HTTP"
    if flow.websocket is not None:
        return "a WebSocket"
    if flow.response is None:
        return "no answer was captured"
    if flow.metadata.get(WITHHELD_KEY):
        return "its request body was not captured"
    if flow.request.raw_content is None:
        return "its request body is missing"
    return None


class Replay:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.flows: list[http.HTTPFlow] = []
        self.captured: dict[str, http.HTTPFlow] = {}  # tag -> the request as captured
        self.task: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("replay_capture", str, "",
                          "A captured flow file to play through the bundle now, each request answered from its "
                          "captured answer (nothing goes out); mitmproxy stops when all are played.")

    def configure(self, updated) -> None:
        if "replay_capture" not in updated or not ctx.options.replay_capture:
            return
        try:
            flows = io.read_flows_from_paths([ctx.options.replay_capture])
        except exceptions.FlowReadException as e:
            raise exceptions.OptionsError(f"replay_capture: {e}") from None
        self.flows, skipped = [], 0
        for flow in flows:
            if replayable(flow) is None:
                self.flows.append(flow)
            else:
                skipped += 1
        self.flows.sort(key=lambda f: f.request.timestamp_start or 0)
        if skipped:
            log.warning("tokenaddons replay: %d captured flow(s) cannot be replayed", skipped)
        ctx.options.update(
            # answers found by the tag alone
            server_replay_use_headers=[TAG], server_replay_ignore_content=True, server_replay_ignore_host=True,
            server_replay_ignore_port=True, server_replay_refresh=False,
            # a request answered here has no tag left: server playback must leave that answer alone
            server_replay_extra="forward",
            upstream_check=False,  # nothing goes upstream, so nothing to check
        )

    def running(self) -> None:
        if not ctx.options.replay_capture:
            return
        if unknown := sorted(ctx.options.deferred):  # a misspelt setting must not pass for a what-if
            log.error("tokenaddons replay: unknown option(s) %s; nothing replayed", ", ".join(unknown))
            return
        if not self.flows:
            asyncio_utils.create_task(self._stop_when_played(), name="tokenaddons replay")
            return
        served, played = [], []
        for i, flow in enumerate(self.flows):
            flow.request.headers[TAG] = str(i)
            self.captured[str(i)] = flow
            copy = flow.copy()
            copy.id = flow.id  # the replayed exchange keeps the captured one's id
            copy.metadata = {}  # a new request to every addon, not a saved flow read back
            served.append(flow)
            played.append(copy)
        ctx.master.commands.call("replay.server", served)
        ctx.master.commands.call("replay.client", played)
        log.info("tokenaddons replay: playing %d captured request(s)", len(played))
        self.task = asyncio_utils.create_task(self._stop_when_played(), name="tokenaddons replay")

    async def _stop_when_played(self) -> None:
        while ctx.master.commands.call("replay.client.count"):
            await asyncio.sleep(0.05)
        ctx.master.shutdown()

    def request(self, flow: http.HTTPFlow) -> None:
        tag = flow.request.headers.get(TAG)
        original = self.captured.get(tag) if tag is not None else None
        if original is None:
            return
        if handled(flow):  # answered here: its captured answer stays unplayed
            del flow.request.headers[TAG]
            return
        ex = Exchange.of(flow)
        if ex is not None:
            ex.on_settle("replay", self._reprice)
        was, now = original.request, flow.request
        if (now.scheme, now.host, now.port, now.path) == (was.scheme, was.host, was.port, was.path):
            return
        if ex is not None and ex.upstream_api is not ex.client_api:  # translated: no answer of that API
            del flow.request.headers[TAG]
            refuse(flow, "replay", "upstream", f"these settings send the request to {now.url} as "
                   f"{ex.upstream_api.name if ex.upstream_api else 'another API'}, whose answer was not captured "
                   f"(captured: {was.url})", status=502)
            return
        # the same API elsewhere (another base URL, route's relay): the captured answer stands in
        now.scheme, now.host, now.port, now.path = was.scheme, was.host, was.port, was.path

    def _reprice(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """After the meter: an answer captured from the model asked for, standing
        in for the model these settings chose (route), is billed as that model:
        the difference is recorded as what the choice saves."""
        events = self.store.events if self.store is not None else None
        if (events is None or flow.is_replay != "response" or ex.usage is None or ex.cost_usd is None
                or not ex.model or ex.model == ex.requested_model):
            return
        cost = pricing.price(ex.provider, ex.model, ex.usage)
        if cost is None:
            log.warning("tokenaddons replay: no price for %s/%s; %s stays priced as captured", ex.provider, ex.model,
                        ex.path)
            return
        events.put_decision({
            "exchange_id": flow.id, "ts": flow.request.timestamp_start or time.time(), "addon": "replay",
            "action": "repriced", "detail": jsonio.dumps_str({"captured": ex.served_model, "as": ex.model}),
            "tokens_saved": 0, "usd_saved": ex.cost_usd - cost, "project": ex.project, "provider": ex.provider,
            "model": ex.model})
