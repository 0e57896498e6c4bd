"""mitmdump with tokenaddons.lean and nothing else: what mitmproxy's event
dispatch and message type checks cost a request, apart from the bundle's own
work (bench_hotpath.py runs it beside bare mitmdump and the bundle).

    mitmdump -s benchmarks/lean_launcher.py ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mitmproxy import ctx  # noqa: E402

from tokenaddons import lean  # noqa: E402


class Lean:
    def running(self) -> None:
        lean.install(ctx.master.addons, self)


addons = [Lean()]
