"""Precision and recall of the injection guard on BIPIA: attacks planted into
benign email and code contexts (start, middle, end) against the contexts alone.

    .venv/bin/python benchmarks/guard_accuracy.py [--split test|train] [--threshold 1.0]

The rules were written against the train attacks; the test attacks (other
categories) are the honest figure.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenaddons.engines.injection import scan


def plant(context: str, attack: str, where: str) -> str:
    if where == "start":
        return f"{attack}\n{context}"
    if where == "end":
        return f"{context}\n{attack}"
    lines = context.split("\n")
    mid = len(lines) // 2
    return "\n".join(lines[:mid] + [attack] + lines[mid:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--split", default="test", choices=["test", "train"])
    ap.add_argument("--threshold", type=float, default=1.0)
    args = ap.parse_args()
    root = Path(args.shared) / "corpora" / "injection" / "bipia"
    print(f"split: {args.split}, threshold {args.threshold}")
    print(f"{'context':<8}{'category':<46}{'recall':>8}")
    for kind, attacks_file in (("email", "text"), ("code", "code")):
        contexts = [json.loads(line)["context"] for line in (root / f"{kind}_test.jsonl").read_text().splitlines()
                    if line.strip()]
        contexts = ["\n".join(c) if isinstance(c, list) else c for c in contexts]  # code contexts come as lines
        path = root / f"{attacks_file}_attack_{args.split}.json"
        if not path.exists():
            print(f"{kind:<8}(no {path.name})")
            continue
        attacks = json.loads(path.read_text())
        tp = fn = 0
        for category, items in attacks.items():
            hit = total = 0
            for i, attack in enumerate(items):
                for j, where in enumerate(("start", "middle", "end")):
                    context = contexts[(i * 3 + j) % len(contexts)]
                    total += 1
                    hit += scan(plant(context, attack, where)).score >= args.threshold
            tp += hit
            fn += total - hit
            print(f"{kind:<8}{category[:45]:<46}{hit / total:>8.2f}")
        fp = sum(scan(c).score >= args.threshold for c in contexts)
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        print(f"{kind:<8}{'ALL':<46}{recall:>8.2f}   precision {precision:.2f}  F1 {f1:.2f}  "
              f"(false alarms: {fp} of {len(contexts)} clean contexts)\n")


if __name__ == "__main__":
    main()
