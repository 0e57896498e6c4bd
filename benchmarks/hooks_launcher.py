"""The bundle with each part's hooks timed, inside a running mitmdump
(bench_hooks.py): `mitmdump -s benchmarks/hooks_launcher.py ...`.

A request for REPORT_PATH is answered here, before the bundle, with the totals
so far as JSON: each part's event-loop CPU seconds in its per-flow hooks
(bench_parts.timed_parts), the garbage collector's seconds, and how many
answers passed.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from mitmproxy import http

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_parts import COLLECTIONS, timed_parts  # noqa: E402

from tokenaddons import bundle  # noqa: E402

REPORT_PATH = "/bench-hooks/report"


class Report:
    def __init__(self, spent_cpu: dict[str, float]):
        self.spent_cpu = spent_cpu
        self.answers = 0

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.path == REPORT_PATH:
            totals = {"parts": self.spent_cpu, "gc": COLLECTIONS.spent, "answers": self.answers}
            flow.response = http.Response.make(200, json.dumps(totals), {"content-type": "application/json"})

    def response(self, flow: http.HTTPFlow) -> None:
        self.answers += 1


parts = bundle.addons()
spent: dict[str, float] = defaultdict(float)
spent_cpu: dict[str, float] = defaultdict(float)
timed_parts(parts, spent, spent_cpu)  # before the bundle's dispatcher picks the hooks up
addons = [Report(spent_cpu), *bundle.loaded(parts)]
