"""What routing costs a client in time to first token: an Anthropic stream
straight to the provider (the simulator), through bare mitmdump, through the
bundle as a plain reverse proxy, and through one `tokenaddons run` port
routing it: sent straight to its provider, through the relay (a fallback chain
whose first target answers; a held key), after a failed first target, and
translated from an OpenAI provider. Medians of the same run; ratios against direct.

    .venv/bin/python benchmarks/bench_route.py [--runs 15] [--delay-ms 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tokenaddons.process import Mitmdump
from tokenaddons.sim import Simulator
from tokenaddons.ui.cli import run_mode

SENT = iter(range(10**9))


def first_token(base: str, delay_ms: int, model: str = "claude-sonnet-4-5") -> float:
    """ms until the first text delta of a streamed Messages answer reaches the client."""
    body = {"model": model, "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": f"Tell me about lighthouses ({next(SENT)})"}]}
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "x-sim-delay-ms": str(delay_ms),
               "cache-control": "no-store"}
    start = time.perf_counter()
    elapsed = None
    with httpx.Client(timeout=60) as c, c.stream("POST", base + "/v1/messages", json=body, headers=headers) as r:
        assert r.status_code == 200, r.read()
        for chunk in r.iter_raw():  # read to the end: the next request must not overlap this one
            if elapsed is None and b"text_delta" in chunk:
                elapsed = (time.perf_counter() - start) * 1000
    assert elapsed is not None, "no text delta"
    return elapsed


def one_port(work: Path, name: str, settings: str, **sets) -> Mitmdump:
    mode, extra = run_mode(None, False)
    (work / name).mkdir(parents=True, exist_ok=True)
    path = work / name / "settings.toml"
    path.write_text(settings)
    options = {**dict(e.split("=", 1) for e in extra), "settings_path": path, **sets}
    return Mitmdump("", work / name, options, mode=mode)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--delay-ms", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-route-"))
    os.environ["BENCH_OPENAI_KEY"] = "sk-bench"
    with Simulator() as a, Simulator(fault="529") as down, Simulator() as o:
        base = f'[providers.anthropic]\nbase_url = "{a.url}"\n[providers.openai]\nbase_url = "{o.url}"\n' \
               'key = "env:BENCH_OPENAI_KEY"\n'
        failing = f'[providers.anthropic]\nbase_url = "{down.url}"\n[providers.openai]\nbase_url = "{o.url}"\n' \
                  'key = "env:BENCH_OPENAI_KEY"\n[providers.backup]\napi = "anthropic"\n' \
                  f'base_url = "{a.url}"\nkey = "none"\n'
        chain = '[[routes]]\nmatch = "claude-*"\nfallbacks = ["openai/gpt-4.1"]\n'
        proxies = {
            "bare mitmdump": Mitmdump(a.url, work / "bare", script=False),
            "bundle, reverse": Mitmdump(a.url, work / "reverse"),
            "route: direct": one_port(work, "direct", base),
            "route: relay, chain": one_port(work, "chain", base + chain),
            "route: relay, held key": one_port(work, "held", base.replace(
                f'base_url = "{a.url}"\n', f'base_url = "{a.url}"\nkey = "env:BENCH_OPENAI_KEY"\n', 1)),
            "route: after a 529": one_port(work, "after", failing + '[[routes]]\nmatch = "claude-*"\n'
                                           'fallbacks = ["backup/claude-sonnet-4-5"]\n'),
            "route: translated": one_port(work, "translated", failing + chain),
        }
        try:
            targets = {"direct": a.url, **{k: p.url for k, p in proxies.items()}}
            for url in targets.values():
                first_token(url, 0)  # warm up connections, imports, the simulator's tokenizer
            times: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.runs):  # round robin: a busy moment of the machine hits every path alike
                for name, url in targets.items():
                    times[name].append(first_token(url, args.delay_ms))
            results = {name: statistics.median(t) for name, t in times.items()}
        finally:
            for p in proxies.values():
                p.stop()
    base_ms = results["direct"]
    print(f"time to first token of an Anthropic stream ({args.delay_ms} ms between events), "
          f"median of {args.runs} runs")
    print(f"{'path':<24}{'ttft ms':>10}{'/direct':>10}{'+ms':>8}")
    for name, ms in results.items():
        print(f"{name:<24}{ms:>10.1f}{ms / base_ms:>10.2f}{ms - base_ms:>8.1f}")
    print(json.dumps({k: round(v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
