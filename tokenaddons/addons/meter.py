"""Metering: timings, usage, cost and savings; one event row per exchange.

Usage comes from the provider's answer (streams parsed event by event as they
pass); only where the provider reports none is it estimated with tiktoken, and
the row says so.
"""
from __future__ import annotations

import logging
import time

from mitmproxy import ctx, http

from tokenaddons.addons.store import Store
from tokenaddons.engines import jsonio, pricing, tokens
from tokenaddons.engines.usage import Usage
from tokenaddons.exchange import FILTER, OBSERVE, Exchange, handled
from tokenaddons.providers.base import Api, StreamState, model_name
from tokenaddons.providers.sse import Event, SSEParser, is_sse

log = logging.getLogger(__name__)


class UsageTap:
    """Follows a stream's events (as upstream sent them) into a StreamState of
    the API that answered (known at the first event: route may have fallen back
    to another provider's API after the request phase)."""

    def __init__(self, exchange: Exchange):
        self.exchange = exchange
        self._state: StreamState | None = None
        self.fed = False

    @property
    def state(self) -> StreamState:
        if self._state is None:
            self._state = self.exchange.upstream_api.stream_state()
        return self._state

    def feed(self, events: list[Event]) -> list[Event]:
        self.fed = True
        for event in events:
            self.state.on_event(event)
        return events

    def end(self) -> list[Event]:
        return []


class HideUsageTap:
    """Drops the usage event that the meter asked upstream for on the client's behalf."""

    def __init__(self, api: Api):
        self.api = api

    def feed(self, events: list[Event]) -> list[Event]:
        return [e for e in events if not self.api.hide_usage_event(e)]

    def end(self) -> list[Event]:
        return []


def _json(raw: bytes | None):
    try:
        return jsonio.loads(raw) if raw else None
    except ValueError:
        return None


class Meter:
    after_send = True  # its response and error hooks run once the answer has left (dispatch.py)

    def __init__(self, store: Store):
        self.store = store
        self.stream_usage = True
        self.bodies_max: int | None = None  # bytes of each body stored; None: bodies are not stored
        self._warm = False

    def load(self, loader) -> None:
        loader.add_option("meter_stream_usage", bool, True,
                          "Ask upstream for usage in streams whose client did not (hidden from that client).")

    def configure(self, updated) -> None:
        if not self._warm:  # as the proxy starts, not on the first request
            self._warm = True
            pricing.warm()
        self.stream_usage = ctx.options.meter_stream_usage
        self.bodies_max = ctx.options.store_body_max if ctx.options.store_bodies else None

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.known or handled(flow) or not ex.stream:
            return
        tap = UsageTap(ex)
        ex.state["meter"] = tap
        ex.add_tap(tap, OBSERVE)
        if self.stream_usage and ex.upstream_api.prepare_stream_usage(ex.body):
            ex.mark_changed()
            ex.add_tap(HideUsageTap(ex.upstream_api), FILTER)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or ex.state.get("metered"):
            return
        ex.state["metered"] = True
        try:
            self._account(flow, ex)
        except Exception as e:  # still one row, and the budget keeps the reservation as spent
            log.exception("tokenaddons meter: could not account %s", flow.request.path)
            ex.decide("meter", "failed", error=f"{e.__class__.__name__}: {e}"[:300])
        try:
            self._write(flow, ex)
        except Exception:
            log.exception("tokenaddons meter: could not meter %s", flow.request.path)

    def _account(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        resp = flow.response
        api = ex.upstream_api
        if api is None:
            return
        if ex.answered_by:  # answered here (cache hit, refusal): nothing billed
            ex.usage = ex.usage or Usage()
            ex.complete = resp is not None and resp.status_code < 400 and flow.error is None
        elif (state := self._stream_state(flow, ex)) is not None:
            ex.usage = state.usage
            ex.served_model = model_name(state.model)
            ex.complete = state.complete and flow.error is None
            ex.error_type = ex.error_type or state.error_type
        elif resp is not None:
            data = _json(ex.upstream_body if ex.upstream_body is not None else resp.content)
            if resp.status_code < 400:
                ex.usage = api.usage(data)
                ex.served_model = model_name(api.served_model(data))
                ex.complete = flow.error is None
            else:
                ex.error_type = ex.error_type or api.error_type(data) or f"http_{resp.status_code}"
        if flow.error is not None and not ex.error_type:
            ex.error_type = "interrupted" if resp is not None else "upstream_unreachable"
        if ex.usage is None and resp is not None and resp.status_code < 400:
            ex.usage = self._estimate(ex)
        if ex.usage is not None and not ex.answered_by:
            ex.cost_usd = pricing.price(ex.provider, ex.served_model or ex.model or "", ex.usage)

    @staticmethod
    def _stream_state(flow: http.HTTPFlow, ex: Exchange) -> StreamState | None:
        """The followed stream's state; a stream that arrived whole (a replayed
        capture, `mitmdump -r`) is parsed now."""
        resp = flow.response
        if resp is None or not is_sse(resp.headers.get("content-type")):
            return None  # asked for a stream, answered in JSON (an error, usually)
        tap = ex.state.get("meter")
        if not isinstance(tap, UsageTap):
            tap = ex.state["meter"] = UsageTap(ex)
        if not tap.fed and resp.raw_content:
            tap.feed(SSEParser().feed(resp.content or b""))
        return tap.state

    @staticmethod
    def _estimate(ex: Exchange) -> Usage:
        model = ex.model
        tap = ex.state.get("meter")
        out_text = "".join(tap.state.text) if isinstance(tap, UsageTap) else ""
        return Usage(input_tokens=ex.input_tokens(),
                     output_tokens=tokens.count_text(out_text, model) if out_text else 0,
                     estimated=True)

    def _write(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        events = self.store.events
        if events is None:
            return
        resp = flow.response
        start = flow.request.timestamp_start or ex.started
        end = (resp.timestamp_end if resp and resp.timestamp_end else None) or time.time()
        first = ex.first_byte or (resp.timestamp_start if resp else None)
        usage = ex.usage or Usage()
        model = ex.served_model or ex.model
        row = {
            "exchange_id": flow.id, "ts": start, "provider": ex.provider, "api": ex.api_name,
            "path": (ex.path or flow.request.path).split("?")[0][:300], "requested_model": ex.requested_model,
            "model": model, "project": ex.project, "client": (ex.client or "")[:200] or None,
            "stream": int(ex.stream), "status": resp.status_code if resp else None,
            "error_type": ex.error_type, "latency_ms": (end - start) * 1000,
            "ttfb_ms": (first - start) * 1000 if first else None,
            **usage.as_row(),
            "cost_usd": ex.cost_usd if ex.cost_usd is not None else (0.0 if ex.answered_by else None),
            "prompt_cache_saved_usd": pricing.prompt_cache_saving(ex.provider, model or "", usage, ex.cost_usd),
            "cache_status": ex.cache_status, "answered_by": ex.answered_by,
            "complete": int(ex.complete),
        }
        if self.bodies_max is not None:
            cap = self.bodies_max
            if flow.request.raw_content and not ex.withhold_body:  # never a body scrub could not clear
                row["request_body"] = flow.request.get_text(strict=False)[:cap]
            if ex.upstream_body is not None:
                row["response_body"] = ex.upstream_body[:cap].decode("utf-8", "replace")
        decisions: list[dict] = []
        try:
            for d in ex.decisions:
                if d.settle is not None:  # a decision priced from what was billed
                    try:
                        d.settle(d, ex)
                    except Exception:
                        log.exception("tokenaddons meter: settling a %s decision failed", d.addon)
                provider, d_model = d.about or (ex.provider, model)
                decisions.append({
                    "exchange_id": flow.id, "ts": start, "addon": d.addon, "action": d.action,
                    "detail": jsonio.dumps_str(d.detail, default=str), "tokens_saved": d.tokens_saved,
                    "usd_saved": d.usd_saved, "project": ex.project, "provider": provider,
                    "model": d_model,
                })
        finally:  # the request's row is kept whatever a decision holds
            events.put_exchange(row, decisions)
