"""What captured traffic would have done under other settings (`tokenaddons replay`).

Two sides, exchange by exchange (joined by the flow id, which a replay keeps):

- as captured: what each exchange was billed and what the addons did, from
  the summary the capture saved with it (`flow.metadata["tokenaddons"]`). A
  capture without summaries (plain `mitmdump -w`, imported cassettes) is first
  metered from its captured answers by `mitmdump -r`, as it would have been
  billed then.
- with these settings: the captured requests played through the bundle with
  the settings given (addons/replay.py), each answered from its own captured
  answer, into a store of their own.

A replayed answer still carries the usage the provider billed for the request
as it was captured. For an exchange that would still go upstream, what these
settings would have billed is that cost less what compress says it saved on
the request (its decisions record how each removed token would have been
billed: uncached input, cache write or cache read, at the model's prices), and,
for a model route chose instead, the captured usage at that model's prices
(the replay driver records the difference); an exchange answered here (a cache
hit, a refusal) would have billed nothing. What cache hints would do to the
provider's own cache cannot be known from a capture: their decisions are
shown, never subtracted (docs/replay.md).
"""
from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path

from mitmproxy import io
from mitmproxy.exceptions import FlowReadException

from tokenaddons.addons.compress import CACHE_READ, CACHE_WRITE
from tokenaddons.addons.replay import replayable
from tokenaddons.exchange import METADATA_KEY
from tokenaddons.process import LAUNCHER, REPLAY_LAUNCHER, run_mitmdump
from tokenaddons.store import open_for_reading, queries

TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
SOURCES = ("cache", "compress", "hints", "routing")
# sources whose savings a replayed answer does not show (hints are billed as the
# provider's cache reads, which a captured answer holds as they were captured)
REWRITERS = ("compress", "routing")
FLAGGERS = ("scrub", "guard")
QUIET = ["--set", "flow_detail=0", "--set", "termlog_verbosity=warn"]


def source_of(addon: str, action: str) -> str | None:
    """Which savings source a decision counts under (None: it saves nothing)."""
    if addon == "cache":
        return "cache"
    if addon == "compress":
        return "hints" if action == "hints" else "compress"
    if addon == "route" or (addon, action) == ("replay", "repriced"):
        return "routing"
    return None


def from_summary(summary: dict) -> dict:
    """One side of an exchange from the summary a capture saved."""
    usage = summary.get("usage") or {}
    return {"answered_by": summary.get("answered_by"), "model": summary.get("model"),
            "usage": {k: usage.get(k, 0) or 0 for k in TOKENS}, "cost_usd": summary.get("cost_usd") or 0.0,
            "decisions": [{"addon": d["addon"], "action": d["action"], "tokens_saved": d.get("tokens_saved", 0),
                           "usd_saved": d.get("usd_saved", 0.0), "detail": {}}
                          for d in summary.get("decisions") or []]}


def from_row(row: dict) -> dict:
    """One side of an exchange from an event row and its decisions."""
    return {"answered_by": row["answered_by"], "model": row["model"],
            "usage": {k: row[k] or 0 for k in TOKENS}, "cost_usd": row["cost_usd"] or 0.0,
            "decisions": row["decisions"]}


def would_bill(side: dict) -> tuple[dict, float]:
    """A replayed exchange's tokens and dollars as these settings would have
    been billed (see the module's note)."""
    if side["answered_by"]:
        return {k: 0 for k in TOKENS}, 0.0
    usage, cost = dict(side["usage"]), side["cost_usd"]
    for d in side["decisions"]:
        if source_of(d["addon"], d["action"]) in REWRITERS:
            cost -= d["usd_saved"] or 0.0
            if d["addon"] == "compress":  # the tokens removed, as they would have been billed
                usage["input_tokens"] -= d["tokens_saved"] or 0
                billed_as = d["detail"].get("billed_as") or {}
                usage["cache_read_tokens"] -= billed_as.get(CACHE_READ, 0)
                usage["cache_write_tokens"] -= billed_as.get(CACHE_WRITE, 0)
    return usage, max(cost, 0.0)


def _total(sides: list[dict], replayed: bool) -> dict:
    out: dict = {"requests": len(sides), "upstream": 0, **{k: 0 for k in TOKENS}, "cost_usd": 0.0,
                 "saved": {s: {"requests": 0, "tokens": 0, "usd": 0.0} for s in SOURCES},
                 "flagged": {f: {"requests": 0, "actions": Counter(), "found": Counter()} for f in FLAGGERS},
                 "refused": defaultdict(lambda: {"requests": 0, "why": Counter()})}
    for side in sides:
        usage, cost = would_bill(side) if replayed else (side["usage"], side["cost_usd"])
        if not side["answered_by"]:
            out["upstream"] += 1
        for k in TOKENS:
            out[k] += usage[k]
        out["cost_usd"] += cost
        flagged, saving = set(), set()
        for d in side["decisions"]:
            src = source_of(d["addon"], d["action"])
            if src is not None and (src == "cache" or d["usd_saved"] or d["tokens_saved"]):
                saved = out["saved"][src]
                saving.add(src)
                saved["tokens"] += d["tokens_saved"] or 0
                saved["usd"] += d["usd_saved"] or 0.0
            if d["addon"] in FLAGGERS:
                flag = out["flagged"][d["addon"]]
                flagged.add(d["addon"])
                flag["actions"][d["action"]] += 1
                flag["found"].update(d["detail"].get("counts") or d["detail"].get("rules") or {})
        for src in saving:  # a request once per source, however many of its steps saved
            out["saved"][src]["requests"] += 1
        for name in flagged:
            out["flagged"][name]["requests"] += 1
        if side["answered_by"] and side["answered_by"] != "cache":
            refused = out["refused"][side["answered_by"]]
            refused["requests"] += 1
            for d in side["decisions"]:
                if d["addon"] == side["answered_by"] and d["detail"].get("scope"):
                    refused["why"][f"{d['detail']['scope']} {d['detail'].get('window', '')}".strip()] += 1
    out["refused"] = dict(out["refused"])
    return out


def _hinted(side: dict) -> bool:
    return any(source_of(d["addon"], d["action"]) == "hints" for d in side["decisions"])


def report(flows: list, captured: dict[str, dict], replayed: dict[str, dict], skipped: Counter) -> dict:
    """The side-by-side report from both sides of each exchange."""
    ids = [f.id for f in flows if f.id in captured and f.id in replayed]
    exchanges = []
    for flow in flows:
        if flow.id not in captured or flow.id not in replayed:
            continue
        was, now = captured[flow.id], replayed[flow.id]
        _, would = would_bill(now)
        exchanges.append({"id": flow.id, "path": flow.request.path.split("?")[0], "model": was["model"],
                          "billed_usd": was["cost_usd"], "would_bill_usd": would,
                          "answered_by": now["answered_by"],
                          "did": sorted({f"{d['addon']}:{d['action']}" for d in now["decisions"]})})
    out = {"exchanges": len(ids), "skipped": dict(skipped),
           "captured": _total([captured[i] for i in ids], replayed=False),
           "replayed": _total([replayed[i] for i in ids], replayed=True),
           "by_exchange": exchanges}
    # requests these settings give cache hints the capture went without: what those
    # save is in the provider's cache reads, which the captured answers cannot show
    out["hinted_anew"] = sum(1 for i in ids if _hinted(replayed[i]) and not _hinted(captured[i]))
    for name, refused in out["replayed"]["refused"].items():  # the spend it would have stopped
        refused["billed_usd"] = sum(captured[i]["cost_usd"] for i in ids if replayed[i]["answered_by"] == name)
    return out


def read(files: list[Path]) -> list:
    out = []
    for path in files:
        try:
            with open(path, "rb") as f:
                out += list(io.FlowReader(f).stream())
        except (OSError, FlowReadException) as e:
            raise ValueError(f"cannot read {path} as mitmproxy flows: {e}") from None
    return out


def run(files: list[Path], settings: str | None = None, sets: tuple[str, ...] = (),
        store: Path | None = None) -> dict:
    """Replay the captured `files` with the settings given; the report."""
    flows, skipped = [], Counter()
    seen: set[str] = set()
    for flow in read(files):
        why = replayable(flow)
        if why is None and flow.id in seen:
            why = "the same exchange twice"
        if why is not None:
            skipped[why] += 1
            continue
        seen.add(flow.id)
        flows.append(flow)
    with tempfile.TemporaryDirectory(prefix="tokenaddons-replay-") as tmp:
        work = Path(tmp)
        combined = work / "capture.flow"
        with open(combined, "wb") as f:
            writer = io.FlowWriter(f)
            for flow in flows:
                writer.add(flow)
        common = ["-n", "--set", f"confdir={work / 'conf'}", *QUIET]
        captured = {f.id: from_summary(f.metadata[METADATA_KEY]) for f in flows if f.metadata.get(METADATA_KEY)}
        if len(captured) < len(flows):  # no summary saved: metered from the captured answers
            baseline = work / "as-captured.db"
            run_mitmdump([*common, "-r", str(combined), "-s", str(LAUNCHER), "--set", f"store_path={baseline}"],
                         Path.cwd())
            with closing(open_for_reading(baseline)) as conn:
                rows = queries.exchanges(conn)
            captured.update({i: from_row(r) for i, r in rows.items() if i not in captured})
        out_store = Path(store) if store else work / "replay.db"
        args = [*common, "-s", str(REPLAY_LAUNCHER), "--set", f"replay_capture={combined}",
                "--set", f"store_path={out_store}"]
        if settings:
            args += ["--set", f"settings_path={Path(settings).resolve()}"]
        for s in sets:
            args += ["--set", s]
        run_mitmdump(args, Path.cwd())  # relative paths in --set are the user's
        with closing(open_for_reading(out_store)) as conn:
            replayed = {i: from_row(r) for i, r in queries.exchanges(conn).items()}
    return report(flows, captured, replayed, skipped)
