"""Terminal views over the event store: the one-shot report, budgets, and the
live stats view (`tokenaddons stats`)."""
from __future__ import annotations

import sqlite3
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tokenaddons.store import health, queries


def fmt_usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def fmt_int(v: int | None) -> str:
    return f"{v or 0:,}"


TOKEN_COLUMNS = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def usage_table(title: str, key: str, rows: list[dict]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column(key, no_wrap=True, overflow="ellipsis")
    for col in ("req", "input", "cache rd", "cache wr", "output", "cost", "errors"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(str(r.get(key) or "-"), *(fmt_int(r[c]) for c in TOKEN_COLUMNS),
                      fmt_usd(r["cost_usd"]),
                      f"[red]{r['errors']}[/]" if r.get("errors") else "0")
    return table


def render_report(data: dict, console: Console | None = None) -> None:
    console = console or Console()
    for warning in data.get("store_warnings") or ():
        console.print(Text(warning, style="bold red"))
    console.print(usage_table("Totals", "all", [{**data, "all": "all"}]))
    console.print(usage_table("By model", "model", [{**m, "model": f"{m['provider']}/{m['model']}"
                                                     if m.get("provider") else m["model"]} for m in data["models"]]))
    console.print(usage_table("By project", "project", data["projects"]))
    if data.get("routing"):
        console.print(routing_table(data["routing"]))
    sources = data.get("savings_by_source") or {}
    if sources:
        console.print(savings_table(sources))


def savings_table(sources: dict[str, dict]) -> Table:
    table = Table(title="Saved, by source", title_justify="left", expand=False)
    table.add_column("source", no_wrap=True)
    for col in ("tokens", "saved"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, s in sources.items():
        usd = s["usd_saved"]
        table.add_row(name, fmt_int(s["tokens_saved"]) if s["tokens_saved"] else "-",
                      f"[green]{fmt_usd(usd)}[/]" if usd > 0 else fmt_usd(usd))
    total = sum(s["usd_saved"] for s in sources.values())
    table.add_row("[bold]all[/]", "", f"[bold]{fmt_usd(total)}[/]")
    return table


def _found(counts: dict) -> str:
    return ", ".join(f"{name} ×{n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def whatif_table(data: dict) -> Table:
    """As captured, side by side with what the replayed settings would have done."""
    was, now = data["captured"], data["replayed"]
    table = Table(title=f"Replay of {data['exchanges']} captured exchange(s)", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("as captured", justify="right")
    table.add_column("with these settings", justify="right")
    table.add_column("difference", justify="right")

    def row(label: str, a, b, fmt=fmt_int, diff: bool = True) -> None:
        change = ""
        if diff and isinstance(a, (int, float)) and isinstance(b, (int, float)) and a != b:
            pct = f" ({(b - a) / a:+.1%})" if a else ""
            change = f"[{'green' if b < a else 'red'}]{'+' if b > a else '-'}{fmt(abs(b - a))}{pct}[/]"
        table.add_row(label, fmt(a) if isinstance(a, (int, float)) else a,
                      fmt(b) if isinstance(b, (int, float)) else b, change)

    row("requests sent upstream", was["upstream"], now["upstream"])
    row("input tokens", was["input_tokens"], now["input_tokens"])
    row("  of which cache reads", was["cache_read_tokens"], now["cache_read_tokens"])
    row("  of which cache writes", was["cache_write_tokens"], now["cache_write_tokens"])
    row("output tokens", was["output_tokens"], now["output_tokens"])
    row("[bold]billed[/]", was["cost_usd"], now["cost_usd"], fmt_usd)
    for source in was["saved"]:
        a, b = was["saved"][source], now["saved"][source]
        if a["requests"] or b["requests"]:
            row(f"saved by {source}", f"{fmt_usd(a['usd'])} ({a['requests']})", f"{fmt_usd(b['usd'])} ({b['requests']})",
                diff=False)
    for name in was["flagged"]:
        a, b = was["flagged"][name], now["flagged"][name]
        if a["requests"] or b["requests"]:
            row(f"flagged by {name}", f"{a['requests']} req", f"{b['requests']} req {_found(b['found'])}".strip(),
                diff=False)
    for name in sorted(set(was["refused"]) | set(now["refused"])):
        a, b = was["refused"].get(name, {}), now["refused"].get(name, {})
        stopped = f"[green]-{fmt_usd(b['billed_usd'])} of spend[/]" if b.get("billed_usd") else ""
        table.add_row(f"refused by {name}", f"{a.get('requests', 0)} req", f"{b.get('requests', 0)} req", stopped)
    return table


def render_whatif(data: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(whatif_table(data))
    for name, refused in data["replayed"]["refused"].items():
        if refused.get("why"):
            console.print(f"{name} refused: {_found(refused['why'])}")
    for why, n in (data.get("skipped") or {}).items():
        console.print(f"[yellow]{n} captured flow(s) not replayed: {why}[/]")
    compressed = data["captured"]["saved"]["compress"]
    if compressed["requests"]:
        console.print(f"The capture was made with compression on: {compressed['requests']} request(s) went upstream "
                      f"compressed (saving {fmt_usd(compressed['usd'])} then), and a replay cannot put back what was "
                      "removed. To see what compression saves, capture with compress=false.")
    if data.get("hinted_anew"):
        console.print(f"Cache hints would go on {data['hinted_anew']} request(s) the capture sent without them: what "
                      "they save is the provider's cache reads, which a replay cannot see (each answer, usage "
                      "included, is the captured one).")
    if data["captured"]["flagged"]["scrub"]["requests"]:
        console.print("Captured requests are saved scrubbed: a replay's scrub sees only what the capture's "
                      "settings let through (logged, not replaced).")


def routing_table(found: list[dict]) -> Table:
    """What route did: targets that served (first choice or fallback), failed or were skipped."""
    table = Table(title="Routing", title_justify="left")
    for col, justify in (("action", "left"), ("provider/model", "left"), ("count", "right"), ("saved", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in found:
        table.add_row(r["action"], f"{r['provider'] or '-'}/{r['model'] or '-'}", fmt_int(r["count"]),
                      fmt_usd(r["usd_saved"]) if r["usd_saved"] else "")
    return table


def fmt_duration(seconds: float) -> str:
    """5d07h, 7h33m, 12m: two units at most."""
    minutes = int(seconds) // 60
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{mins:02d}m" if hours else f"{mins}m"


def budget_table(windows: list[dict]) -> Table:
    table = Table(title="Budgets", title_justify="left")
    for col, justify in (("scope", "left"), ("window", "left"), ("spent", "right"), ("limit", "right"),
                         ("used", "right"), ("resets in", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for w in windows:
        colour = "red" if w["percent"] >= 100 else "yellow" if w["percent"] >= 80 else "green"
        table.add_row(w["scope"], w["window"], fmt_usd(w["spent_usd"]), fmt_usd(w["limit_usd"]),
                      f"[{colour}]{w['percent']:.0f}%[/]", fmt_duration(w["resets_in_s"]))
    return table


def render_budget(windows: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    if not windows:
        console.print("No budget is set (options budget_hourly_usd, budget_daily_usd, budget_monthly_usd, "
                      "budget_project_*_usd).")
        return
    console.print(budget_table(windows))


# ------------------------------------------------------------------ the live stats view

WINDOWS = {"h": "last hour", "d": "today", "m": "this month"}
SPARK = " ▁▂▃▄▅▆▇█"


def window_start(key: str, now: float) -> float:
    t = datetime.fromtimestamp(now).astimezone()
    if key == "h":
        return now - 3600
    if key == "d":
        return t.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def sparkline(values: list[float]) -> str:
    top = max(values) if values else 0
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(8, int(round(v / top * 8)))] if v > 0 else SPARK[0] for v in values)


def fmt_tokens(n: int | None) -> str:
    n = n or 0
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.1f}s" if v >= 10_000 else f"{v:.0f}"


def describe(decisions: list[dict]) -> str:
    """What the addons did to one request, in a few words."""
    parts = []
    compressed = 0
    for d in decisions:
        detail = d.get("detail") or {}
        if d["addon"] == "scrub" and detail.get("counts"):
            parts.append("scrubbed " + ", ".join(f"{n} {k.lower().split('_')[0]}" for k, n in detail["counts"].items()))
        elif d["addon"] == "compress":
            if d["action"] == "hints":
                hints = detail.get("breakpoints") and f"{len(detail['breakpoints'])} breakpoints" or "cache key"
                parts.append(f"hints: {hints}")
            else:
                compressed += d.get("tokens_saved") or 0
        elif d["addon"] == "cache":
            continue  # shown in its own column
        else:
            parts.append(f"{d['addon']} {d['action']}")
    if compressed:
        parts.append(f"compressed -{fmt_tokens(compressed)} tok")
    return "; ".join(parts)


class StatsView:
    """Builds one frame from the store; `tokenaddons stats` redraws it every second."""

    def __init__(self, store: str | Path, window: str = "d", recent: int = 10):
        self.path = Path(store).expanduser()
        self.window = window
        self.recent = recent
        self.narrow = False  # under 110 columns: fewer columns, the same numbers

    def connect(self) -> sqlite3.Connection:
        from tokenaddons.store import open_for_reading

        return open_for_reading(self.path)

    def frame(self, conn: sqlite3.Connection, now: float | None = None, width: int = 120) -> Group:
        now = time.time() if now is None else now
        self.narrow = width < 110
        since = window_start(self.window, now)
        found = queries.breakdowns(conn, since)
        saved = queries.savings_by_source(conn, since, prompt_cache_saved_usd=found["totals"]["prompt_cache_saved_usd"])
        lat = queries.latencies(conn, since)
        blocks = [Text(w, style="bold red") for w in health.warnings(self.path)]
        blocks += [Text(n, style="dim") for n in health.notes(self.path)]  # team mode, all well
        blocks += [self._header(found["totals"], saved, since, now, conn),
                  self._models(conn, since, found["models"], lat["model"]),
                  self._projects(conn, since, found["projects"], lat["project"])]
        gauges = self._budgets(conn, now)
        if gauges is not None:
            blocks.append(gauges)
        limits = queries.decision_counts(conn, "ratelimit", since)
        if limits:
            blocks.append(Text(f"rate limits: {limits.get('delayed', 0)} delayed, "
                               f"{limits.get('refused', 0)} refused", style="yellow"))
        blocks.append(self._recent(conn))
        return Group(*blocks)

    def _header(self, t: dict, saved: dict, since: float, now: float, conn) -> Panel:
        sources = {name: s["usd_saved"] for name, s in saved.items()}
        total_saved = sum(sources.values())
        hit_rate = 100 * t["cache_hits"] / t["requests"] if t["requests"] else 0.0
        spark = queries.spend_per_minute(conn, max(since, now - 3600), now)[-60:]
        lines = Table.grid(padding=(0, 2))
        lines.add_column()
        lines.add_column()
        lines.add_row("requests", f"{t['requests']:,}  [red]{t['errors']:,} errors[/]" if t["errors"]
                      else f"{t['requests']:,}")
        lines.add_row("tokens", f"in {fmt_tokens(t['input_tokens'])}  cache rd {fmt_tokens(t['cache_read_tokens'])}"
                      f"  cache wr {fmt_tokens(t['cache_write_tokens'])}  out {fmt_tokens(t['output_tokens'])}")
        lines.add_row("spent", f"[bold]{fmt_usd(t['cost_usd'])}[/]")
        lines.add_row("saved", f"[green]{fmt_usd(total_saved)}[/]  " + "  ".join(
            f"{k} [green]{fmt_usd(v)}[/]" for k, v in sources.items() if v))
        lines.add_row("cache hit rate", f"{hit_rate:.1f}%")
        lines.add_row("$/min (1 h)", f"[cyan]{sparkline(spark)}[/]")
        title = f"tokenaddons · {WINDOWS[self.window]} · {datetime.fromtimestamp(now).strftime('%H:%M:%S')}"
        return Panel(lines, title=title, title_align="left",
                     subtitle="[dim]h hour · d day · m month · q quit[/]", subtitle_align="right")

    def _table(self, title: str, key_cols: list[str], rows: list[dict], lat: dict, saved: dict, keyf) -> Table:
        table = Table(title=title, title_justify="left", expand=False, pad_edge=False)
        for col in key_cols:
            table.add_column(col, no_wrap=True, max_width=26, overflow="ellipsis")
        columns = ["req", "tokens", "cost", "saved", "p50/p95 ms", "ttft p50", "err"]
        if self.narrow:
            columns.remove("ttft p50")
        for col in columns:
            table.add_column(col, justify="right", no_wrap=True)
        for r in rows:
            k = keyf(r)
            l = lat.get(k, {})
            s = sum(v["usd_saved"] for v in saved.get(r.get("model") if "model" in key_cols else r.get("project"),
                                                        {}).values()) + r["prompt_cache_saved_usd"]
            cells = {"req": f"{r['requests']:,}", "tokens": fmt_tokens(r["input_tokens"] + r["output_tokens"]),
                     "cost": fmt_usd(r["cost_usd"]), "saved": f"[green]{fmt_usd(s)}[/]" if s > 0 else fmt_usd(s),
                     "p50/p95 ms": f"{fmt_ms(l.get('p50_ms'))}/{fmt_ms(l.get('p95_ms'))}",
                     "ttft p50": fmt_ms(l.get("ttft_p50_ms")),
                     "err": f"[red]{r['errors']}[/]" if r["errors"] else "0"}
            table.add_row(*(str(r.get(c) or "-") for c in key_cols), *(cells[c] for c in columns))
        return table

    def _models(self, conn, since: float, rows: list[dict], lat: dict) -> Table:
        keys = ["model"] if self.narrow else ["provider", "model"]
        return self._table("by model", keys, rows, lat,
                           queries.savings(conn, since, by="model"), lambda r: (r["provider"] or "", r["model"]))

    def _projects(self, conn, since: float, rows: list[dict], lat: dict) -> Table:
        return self._table("by project", ["project"], rows, lat,
                           queries.savings(conn, since, by="project"), lambda r: r["project"])

    def _budgets(self, conn, now: float) -> Table | None:
        from tokenaddons.store.queries import budget_status as status

        windows = status(conn, now)
        return budget_table(windows) if windows else None

    def _recent(self, conn) -> Table:
        table = Table(title="recent", title_justify="left", pad_edge=False)
        columns = [("time", "left"), ("project", "left"), ("model", "left"), ("in/out", "right"),
                   ("cost", "right"), ("cache", "left"), ("status", "right"), ("addons", "left")]
        if self.narrow:
            columns = [c for c in columns if c[0] not in ("project", "in/out")]
        for col, justify in columns:
            table.add_column(col, justify=justify, no_wrap=col != "addons", overflow="ellipsis",
                             max_width=22 if col in ("model", "project") else None, min_width=8 if col == "addons" else None)
        for r in queries.recent(conn, self.recent):
            status = str(r["status"] or r["error_type"] or "-")
            bad = r["error_type"] or (r["status"] or 0) >= 400
            answered = r["answered_by"] and r["answered_by"] != "cache"
            cells = {"time": datetime.fromtimestamp(r["ts"]).strftime("%H:%M:%S"), "project": r["project"] or "-",
                     "model": r["model"] or "-",
                     "in/out": f"{fmt_tokens(r['input_tokens'])}/{fmt_tokens(r['output_tokens'])}",
                     "cost": fmt_usd(r["cost_usd"]),
                     "cache": "[green]HIT[/]" if r["cache_status"] == "HIT" else (r["cache_status"] or "-"),
                     "status": f"[red]{status}[/]" if bad or answered else status,
                     "addons": describe(r["decisions"])}
            table.add_row(*(cells[c] for c, _ in columns), style="red" if answered else None)
        return table

    def once(self, console: Console) -> None:
        with self.connect() as conn:
            console.print(self.frame(conn, width=console.width))

    def live(self, console: Console, refresh: float = 1.0) -> None:
        keys = KeyReader() if sys.stdin.isatty() else None
        try:
            with self.connect() as conn, Live(self.frame(conn, width=console.width), console=console, screen=False,
                                               auto_refresh=False) as live:
                while True:
                    deadline = time.monotonic() + refresh
                    while time.monotonic() < deadline:
                        key = keys.get(0.1) if keys else time.sleep(0.1)
                        if key in WINDOWS:
                            self.window = key
                            break
                        if key in ("q", "\x03"):
                            return
                    live.update(self.frame(conn, width=console.width), refresh=True)
        except KeyboardInterrupt:
            return
        finally:
            if keys:
                keys.close()


class KeyReader:
    """Single key presses from a terminal, read on a thread (cbreak mode, restored on close)."""

    def __init__(self) -> None:
        import termios
        import tty

        self.fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.keys: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import os

        while True:
            try:
                ch = os.read(self.fd, 1).decode(errors="ignore")
            except OSError:
                return
            with self.lock:
                self.keys.append(ch.lower())

    def get(self, timeout: float) -> str | None:
        time.sleep(timeout)
        with self.lock:
            return self.keys.pop(0) if self.keys else None

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
