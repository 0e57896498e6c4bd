"""What the scrubber would change in the code, data and logs a coding agent reads
every day: changed spans per 100 KB, by entity type, on a corpus built here and
now from real files available offline.

    .venv/bin/python benchmarks/scrub_corpus.py [--show 5] [--keep DIR | --load DIR]

`--keep DIR` writes the corpus it built to DIR; `--load DIR` scans such a kept
corpus instead of building one (the same bytes before and after a change).

The corpus (about 1.5 MB):
- code: Python sources of installed packages (mitmproxy, click, rich,
  redis, the anthropic SDK, ...) and the Claude Code SDK's TypeScript types;
- data: the output of `pip inspect` (JSON, pretty-printed), the npm lock file
  setup.sh wrote, wheel RECORD files (paths, sha256 digests, sizes), a
  CycloneDX SBOM, the price table of genai-prices, and an embeddings file
  (float32 vectors, pretty-printed JSON, as an embeddings API returns them);
- docs: the README prose of the installed packages (their pip descriptions), kept
  apart: prose may hold a real phone number or address, code and data should not;
- logs: a real `pytest -v --color=yes` run, `pip list -v`, `pip show -f`,
  `git log --stat` and `git log -p` of this repository, `python -X importtime`,
  `ls -l --full-time` of the installed packages.

Target: nothing but real e-mail addresses, keys and tokens in code, data and
logs; every other span the scrubber changed there is a false positive, and the model would
then reason about a placeholder instead of the code.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

from tokenaddons.engines.pii import ALL_ENTITIES, SECRET_ENTITIES, Detector

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sysconfig.get_paths()["purelib"])
EXPECTED = {"EMAIL_ADDRESS", *SECRET_ENTITIES}  # real ones are there to be found
CODE = ["mitmproxy/http.py", "mitmproxy/proxy/layers/http/__init__.py", "redis/commands/core.py",
        "click/core.py", "rich/console.py", "anthropic/_base_client.py", "httpx/_models.py", "tldextract/tldextract.py",
        "jinja2/compiler.py", "mitmproxy/flow.py", "cryptography/x509/base.py", "sqlite3/dbapi2.py"]
CODE_TS = [ROOT / ".tools/node_modules/@anthropic-ai/claude-code/sdk-tools.d.ts"]


def run(*cmd: str, cwd: Path = ROOT) -> str:
    env = {**os.environ, "PY_COLORS": "1", "COLUMNS": "120", "GIT_PAGER": "cat", "PAGER": "cat"}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    return done.stdout + done.stderr


def embeddings(n: int = 24, dims: int = 256) -> str:
    """Vectors as an embeddings API returns them: unit-length float32 values."""
    rng = random.Random(7)
    data = []
    for i in range(n):
        v = [rng.gauss(0, 1) for _ in range(dims)]
        norm = sum(x * x for x in v) ** 0.5
        v32 = [struct.unpack("f", struct.pack("f", x / norm))[0] for x in v]
        data.append({"object": "embedding", "index": i, "embedding": v32})
    return json.dumps({"object": "list", "data": data, "model": "text-embedding-3-small",
                       "usage": {"prompt_tokens": 1843, "total_tokens": 1843}}, indent=2)


def build(work: Path) -> dict[str, list[tuple[str, str]]]:
    py = sys.executable
    corpus: dict[str, list[tuple[str, str]]] = {"code": [], "data": [], "logs": [], "docs": []}
    for rel in CODE:
        if (SITE / rel).exists():
            corpus["code"].append((rel, (SITE / rel).read_text(errors="replace")))
    for path in CODE_TS:
        if path.exists():
            corpus["code"].append((path.name, path.read_text(errors="replace")))

    inspect = json.loads(run(py, "-m", "pip", "inspect") or "{}")
    # package descriptions are README prose (with the odd phone number in an example): apart from the data
    readmes = [p["metadata"].pop("description", "") for p in inspect.get("installed", []) if "metadata" in p]
    corpus["docs"].append(("package READMEs (pip inspect descriptions)", "\n\n".join(readmes)[:300_000]))
    corpus["data"].append(("pip inspect (JSON)", json.dumps(inspect, indent=2)[:400_000]))
    lock = ROOT / ".tools" / "package-lock.json"
    if lock.exists():
        corpus["data"].append(("package-lock.json", lock.read_text()))
    records = sorted(SITE.glob("*.dist-info/RECORD"))[:40]
    corpus["data"].append(("wheel RECORD files", "\n".join(p.read_text(errors="replace") for p in records)))
    for sbom in sorted(SITE.glob("*.dist-info/sboms/*.json"))[:2]:
        corpus["data"].append((sbom.name, sbom.read_text(errors="replace")))
    prices = SITE / "genai_prices" / "data.py"
    if prices.exists():
        corpus["data"].append(("genai_prices/data.py", prices.read_text()[:200_000]))
    corpus["data"].append(("embeddings.json", embeddings()))

    tests = [t for t in ("tests/unit/test_sse.py", "tests/unit/test_tokens.py", "tests/unit/test_pricing.py")
             if (ROOT / t).exists()]
    corpus["logs"].append(("pytest -v --color=yes", run(py, "-m", "pytest", "-v", "--color=yes", "-p",
                                                         "no:cacheprovider", *tests)))
    corpus["logs"].append(("pip list -v", run(py, "-m", "pip", "list", "-v")))
    corpus["logs"].append(("pip show -f", run(py, "-m", "pip", "show", "-f", "mitmproxy", "tiktoken")))
    if shutil.which("git") and (ROOT / ".git").exists():
        corpus["logs"].append(("git log --stat", run("git", "log", "--stat", "-n", "150")))
        corpus["logs"].append(("git log -p", run("git", "log", "-p", "-n", "3", "--", "tokenaddons/stream.py",
                                                  "tokenaddons/providers")))
    corpus["logs"].append(("python -X importtime", run(py, "-X", "importtime", "-c", "import mitmproxy.http")))
    corpus["logs"].append(("ls -l --full-time", run("ls", "-l", "--full-time", str(SITE))))
    for kind, docs in corpus.items():  # kept for a look (--keep)
        for i, (name, text) in enumerate(docs):
            (work / f"{kind}-{i:02d}.txt").write_text(f"# {name}\n{text}")
    return corpus


def load(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """A corpus `build` kept: `{kind}-{n}.txt` files, each its name on the first line."""
    corpus: dict[str, list[tuple[str, str]]] = {"code": [], "data": [], "logs": [], "docs": []}
    for path in sorted(folder.glob("*-*.txt")):
        name, _, text = path.read_text().partition("\n")
        corpus[path.stem.split("-")[0]].append((name.removeprefix("# "), text))
    return corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--show", type=int, default=0, help="print up to N changed spans of each type, with context")
    ap.add_argument("--keep", help="write the corpus to this folder")
    ap.add_argument("--load", help="scan the corpus kept in this folder (--keep) instead of building one")
    args = ap.parse_args()
    if args.load:
        corpus = load(Path(args.load))
    else:
        work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="scrub-corpus-"))
        work.mkdir(parents=True, exist_ok=True)
        corpus = build(work)
        if not args.keep:
            shutil.rmtree(work)
    detector = Detector()
    detector.warm()
    table: dict[str, Counter] = {}
    sizes: dict[str, int] = {}
    seconds = 0.0
    shown: Counter = Counter()
    for kind, docs in corpus.items():
        table[kind] = Counter()
        sizes[kind] = sum(len(text.encode()) for _, text in docs)
        for name, text in docs:
            start = time.perf_counter()
            findings = detector.find(text)
            seconds += time.perf_counter() - start
            for f in findings:
                table[kind][f.entity] += 1
                if shown[f.entity] < args.show:
                    shown[f.entity] += 1
                    before = text[max(0, f.start - 40):f.start].replace("\n", "\\n")
                    after = text[f.end:f.end + 20].replace("\n", "\\n")
                    print(f"{f.entity:<15} {kind}/{name}: ...{before}[[{text[f.start:f.end]}]]{after}...")
    total = sum(sizes.values())
    print(f"\nchanged spans per 100 KB ({total / 1000:.0f} KB in all; scanned in {seconds:.1f} s, first time)")
    print(f"{'entity':<16}" + "".join(f"{k + f' ({sizes[k] // 1000} KB)':>18}" for k in corpus) + "   ")
    for entity in ALL_ENTITIES:
        cells = [table[k][entity] * 100_000 / max(1, sizes[k]) for k in corpus]
        mark = "(real ones expected)" if entity in EXPECTED else ""
        print(f"{entity:<16}" + "".join(f"{c:>18.2f}" for c in cells) + f"   {mark}")
    unexpected = {k: sum(n for e, n in table[k].items() if e not in EXPECTED) for k in corpus}
    print(f"{'other than e-mails, keys, tokens':<16}" + "".join(
        f"{unexpected[k] * 100_000 / max(1, sizes[k]):>18.2f}" for k in corpus))
    print(json.dumps({"kb": {k: round(v / 1000) for k, v in sizes.items()},
                      "spans": {k: dict(v) for k, v in table.items()}}))


if __name__ == "__main__":
    main()
