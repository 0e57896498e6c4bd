"""What the scanners' shortcuts save, text by text: `injection.scan` (guard) and
`pii.Detector._scan` (scrub) with their shortcuts (a rule or a recognizer runs
only on text that can hold what it finds) against the same scans with every
rule and recognizer run on every text (tokenaddons.test.shortcuts), in one
run, interleaved, best of several rounds. The findings are the same both ways
(checked here on these texts, and in tests/unit on a varied corpus).

The texts: bench_hotpath's agent request, its new last turn (what a miss scans:
one short tool result) and its history's texts (scanned once, then
remembered), prose and code of several lengths.

    .venv/bin/python benchmarks/bench_scan.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hotpath import request  # noqa: E402

from tokenaddons.engines import injection, pii  # noqa: E402
from tokenaddons.providers.anthropic import MESSAGES  # noqa: E402
from tokenaddons.test.shortcuts import shortcuts_off  # noqa: E402

PROSE = "Quarterly numbers are attached. Revenue grew 4% and churn fell. We look forward to your reply.\n"
CODE = Path(pii.__file__).read_text()


def cases() -> dict[str, list[str]]:
    refs = list(MESSAGES.text_refs(json.loads(request("history"))))
    history = [ref.text for ref in refs]
    return {"the hot path's new turn": ["run 123: 3 passed, 1 failed"],
            f"its {len(history)} history texts (each)": history,
            "prose, 100 characters": [PROSE[:100]], "prose, 1 KB": [(PROSE * 11)[:1000]],
            "code, 4 KB": [CODE[:4096]], "code, 40 KB": [(CODE * 2)[:40_000]]}


def best(fn, texts: list[str], rounds: int) -> float:
    """Best time of `rounds` passes over `texts`, per text."""
    fastest = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            fn(text)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / len(texts)


def main() -> None:
    detector = pii.Detector()
    detector.warm()
    print(f"{'':38}{'injection.scan, µs':>30}{'Detector._scan, µs':>30}")
    print(f"{'text':38}{'every rule':>12}{'shortcuts':>11}{'ratio':>7}{'every one':>12}{'shortcuts':>11}{'ratio':>7}")
    for name, texts in cases().items():
        rounds = max(3, min(300, 200_000 // sum(map(len, texts))))
        scans = {"inj": injection.scan, "pii": detector._scan}
        found = {k: [fn(text) for text in texts] for k, fn in scans.items()}
        fast = {k: float("inf") for k in scans}
        full = dict(fast)
        for _ in range(3):  # alternating, for a machine that is busy with other work
            for k, fn in scans.items():
                fast[k] = min(fast[k], best(fn, texts, rounds))
            with shortcuts_off(detector):
                for k, fn in scans.items():
                    full[k] = min(full[k], best(fn, texts, rounds))
                assert all([fn(text) for text in texts] == found[k] for k, fn in scans.items()), name
        print(f"{name:38}{full['inj'] * 1e6:12.1f}{fast['inj'] * 1e6:11.1f}{full['inj'] / fast['inj']:6.1f}x"
              f"{full['pii'] * 1e6:12.1f}{fast['pii'] * 1e6:11.1f}{full['pii'] / fast['pii']:6.1f}x")


if __name__ == "__main__":
    main()
