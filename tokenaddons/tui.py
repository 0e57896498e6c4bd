"""Terminal views over the event store: the one-shot report (and the live stats view)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def fmt_usd(v: float | None) -> str:
    return "-" if v is None else f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}"


def fmt_int(v: int | None) -> str:
    return f"{v or 0:,}"


TOKEN_COLUMNS = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def usage_table(title: str, key: str, rows: list[dict]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column(key, no_wrap=True)
    for col in ("req", "input", "cache rd", "cache wr", "output", "cost", "errors"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.get(key) or "-"), *(fmt_int(r[c]) for c in TOKEN_COLUMNS),
                      fmt_usd(r["cost_usd"]),
                      f"[red]{r['errors']}[/]" if r.get("errors") else "0")
    return table


def render_report(data: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(usage_table("Totals", "all", [{**data, "all": "all"}]))
    console.print(usage_table("By model", "model", data["models"]))
    console.print(usage_table("By project", "project", data["projects"]))
    if data.get("prompt_cache_saved_usd"):
        console.print(f"Provider prompt caching saved [green]{fmt_usd(data['prompt_cache_saved_usd'])}[/]")
    for addon, s in (data.get("savings") or {}).items():
        if s["usd_saved"] or s["tokens_saved"]:
            console.print(f"{addon} saved [green]{fmt_usd(s['usd_saved'])}[/] "
                          f"({fmt_int(s['tokens_saved'])} tokens)")


def budget_table(windows: list[dict]) -> Table:
    table = Table(title="Budgets", title_justify="left")
    for col, justify in (("scope", "left"), ("window", "left"), ("spent", "right"), ("limit", "right"),
                         ("used", "right"), ("resets in", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for w in windows:
        colour = "red" if w["percent"] >= 100 else "yellow" if w["percent"] >= 80 else "green"
        hours, rest = divmod(int(w["resets_in_s"]), 3600)
        table.add_row(w["scope"], w["window"], fmt_usd(w["spent_usd"]), fmt_usd(w["limit_usd"]),
                      f"[{colour}]{w['percent']:.0f}%[/]", f"{hours}h{rest // 60:02d}m")
    return table


def render_budget(windows: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    if not windows:
        console.print("No budget is set (options budget_hourly_usd, budget_daily_usd, budget_monthly_usd, "
                      "budget_project_*_usd).")
        return
    console.print(budget_table(windows))
