"""The least a cache miss costs in the bundle's design, as one mitmproxy addon
(bench_ablate.py's "floor"): what any proxy that scans, keys, rewrites and
meters an agent's request must do on the event loop, and nothing else.

Per request: read the body, hash it (the cache key), parse it, check its depth
and write its turns as JSON (the history match), put one prompt-cache
breakpoint on the system prompt and write the body again; per answer: parse it
and queue one row for a writer thread that inserts it into SQLite. No scan, no
memo, no decision: every feature's own work comes on top of this.

    mitmdump -s benchmarks/floor_addon.py --set floor_db=FILE ...
"""
from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time

import orjson
from mitmproxy import ctx, http


class Floor:
    def __init__(self) -> None:
        self.rows: queue.Queue = queue.Queue()
        self.digests: dict[http.HTTPFlow, bytes] = {}

    def load(self, loader) -> None:
        loader.add_option("floor_db", str, "floor.db", "The SQLite file rows are written to.")

    def running(self) -> None:
        threading.Thread(target=self._write, args=(ctx.options.floor_db,), daemon=True).start()

    def _write(self, path: str) -> None:
        db = sqlite3.connect(path)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=normal")
        db.execute("create table if not exists requests(ts, model, path, status, input_tokens, output_tokens, "
                   "cost_usd, cache_key)")
        while True:
            batch = [self.rows.get()]
            while not self.rows.empty():
                batch.append(self.rows.get_nowait())
            db.executemany("insert into requests values (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            db.commit()

    def request(self, flow: http.HTTPFlow) -> None:
        raw = flow.request.get_content()
        self.digests[flow] = hashlib.sha256(raw).digest()
        body = orjson.loads(raw)
        orjson.dumps({k: v for k, v in body.items() if k != "messages"})  # the depth check, with
        orjson.dumps([body["messages"]])  # the turns written once for the history
        body["system"] = [{"type": "text", "text": body["system"], "cache_control": {"type": "ephemeral"}}]
        flow.request.content = orjson.dumps(body)

    def response(self, flow: http.HTTPFlow) -> None:
        answer = orjson.loads(flow.response.content)
        usage = answer["usage"]
        self.rows.put((time.time(), answer["model"], flow.request.path, flow.response.status_code,
                       usage["input_tokens"], usage["output_tokens"], usage["input_tokens"] * 3e-6,
                       self.digests.pop(flow, b"").hex()))

    def error(self, flow: http.HTTPFlow) -> None:
        self.digests.pop(flow, None)


addons = [Floor()]
