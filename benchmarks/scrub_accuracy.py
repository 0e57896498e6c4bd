"""Recall and precision of the scrubber per entity type on presidio-research's
labelled synthetic sentences. (What it changes in code, data and logs:
benchmarks/scrub_corpus.py.)

    .venv/bin/python benchmarks/scrub_accuracy.py [--shared ../shared]

A finding counts as right when it overlaps a labelled span of the same type.
Types the scrubber does not look for (PERSON, addresses, dates...) are not
scored: they are not in its entity list.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from tokenaddons.engines.pii import PII_ENTITIES, Detector


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score_corpus(detector: Detector, records: list[dict]) -> dict[str, Counter]:
    stats: dict[str, Counter] = {e: Counter() for e in PII_ENTITIES}
    for rec in records:
        gold = [(s["entity_type"], (s["start_position"], s["end_position"])) for s in rec["spans"]
                if s["entity_type"] in stats]
        found = [(f.entity, (f.start, f.end)) for f in detector.find(rec["full_text"]) if f.entity in stats]
        for entity, span in gold:
            stats[entity]["gold"] += 1
            stats[entity]["tp"] += any(e == entity and overlaps(span, s) for e, s in found)
        for entity, span in found:
            stats[entity]["found"] += 1
            stats[entity]["fp"] += not any(e == entity and overlaps(span, s) for e, s in gold)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = ap.parse_args()
    corpus = Path(args.shared) / "corpora" / "pii" / "synth_dataset_v2.json"
    if not corpus.exists():
        sys.exit(f"no corpus at {corpus}")
    detector = Detector()
    stats = score_corpus(detector, json.loads(corpus.read_text()))
    print(f"{'entity':<16}{'labelled':>9}{'found':>7}{'recall':>8}{'precision':>11}")
    for entity, s in stats.items():
        recall = s["tp"] / s["gold"] if s["gold"] else float("nan")
        precision = (s["found"] - s["fp"]) / s["found"] if s["found"] else float("nan")
        print(f"{entity:<16}{s['gold']:>9}{s['found']:>7}{recall:>8.2f}{precision:>11.2f}")


if __name__ == "__main__":
    main()
