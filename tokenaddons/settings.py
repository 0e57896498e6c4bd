"""Structured settings from one TOML file, named by the option `settings_path`.

Scalar tunables are mitmproxy options of the addon that owns them; what does
not fit in an option lives here:

    [prices."anthropic/claude-opus-4-8"]      # USD per million tokens; wins over genai-prices
    input_mtok = 5
    output_mtok = 25
    cache_read_mtok = 0.5
    cache_write_mtok = 6.25                   # 5-minute writes
    cache_write_1h_mtok = 10                  # optional: else Anthropic's 2x input rule

    [budget.provider.anthropic]               # caps per provider ...
    daily_usd = 20
    [budget.model."claude-opus-*"]            # ... per model (shell-style pattern) ...
    hourly_usd = 2
    [budget.project.nightly-evals]            # ... and for one named project
    monthly_usd = 50

The file is read when the option is set (at start, or by `--set`/the options
editor later), and again when it changes on disk. Any mistake (syntax, unknown
key, a negative amount) is an OptionsError that names the file and the key: a
typo in a spend cap must never silently mean "no cap". A broken edit while
running is logged and the settings in force are kept.
"""
from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import ctx, exceptions

from tokenaddons import pricing

log = logging.getLogger(__name__)

PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
BUDGET_SCOPES = ("provider", "model", "project")
BUDGET_KEYS = ("hourly_usd", "daily_usd", "monthly_usd")


@dataclass
class Values:
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    # scope kind ("provider" | "model" | "project") -> name or pattern -> window -> USD
    budgets: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def _amount(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where} must be a non-negative number, not {value!r}")
    return float(value)


def _table(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table")
    return value


def _unknown(where: str, found, allowed) -> None:
    extra = sorted(set(found) - set(allowed))
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)} (expected {', '.join(allowed)})")


def parse(doc: dict) -> Values:
    """Validated settings from a parsed TOML document; ValueError names the bad key."""
    _unknown("settings", doc, ("prices", "budget"))
    out = Values()
    for model, table in _table("[prices]", doc.get("prices", {})).items():
        where = f"[prices.{model!r}]"
        _unknown(where, _table(where, table), PRICE_KEYS)
        for needed in ("input_mtok", "output_mtok"):
            if needed not in table:
                raise ValueError(f"{where}: {needed} is required")
        out.prices[model] = {k: _amount(f"{where} {k}", v) for k, v in table.items()}
    budget = _table("[budget]", doc.get("budget", {}))
    _unknown("[budget]", budget, BUDGET_SCOPES)
    for kind in BUDGET_SCOPES:
        for name, table in _table(f"[budget.{kind}]", budget.get(kind, {})).items():
            where = f"[budget.{kind}.{name!r}]"
            _unknown(where, _table(where, table), BUDGET_KEYS)
            caps = {k.removesuffix("_usd"): _amount(f"{where} {k}", v) for k, v in table.items()}
            out.budgets.setdefault(kind, {})[name] = caps
    return out


def load_file(path: str) -> Values:
    try:
        with open(Path(path).expanduser(), "rb") as f:
            return parse(tomllib.load(f))
    except OSError as e:
        raise exceptions.OptionsError(f"settings_path: cannot read {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise exceptions.OptionsError(f"settings_path: {path}: {e}") from None


class Settings:
    """Loads the TOML file; other addons read `values` (and `generation`, which
    changes with every load). Prices apply at once. An edited file is picked up
    within RELOAD_CHECK_S, at the next request; an edit with a mistake is
    logged and the settings in force are kept."""

    RELOAD_CHECK_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.values = Values()
        self.generation = 0
        self._stamp: tuple | None = None  # (mtime_ns, size) of the file last read
        self._checked = 0.0

    def load(self, loader) -> None:
        loader.add_option("settings_path", str, "",
                          "TOML file with structured settings: price overrides, budget caps per "
                          "provider, model and project (empty = none). Edits are picked up while running.")

    def configure(self, updated) -> None:
        if "settings_path" not in updated:
            return
        path = ctx.options.settings_path
        self._stamp = _stamp(path) if path else None
        self._apply(load_file(path) if path else Values(), path)

    def request(self, flow) -> None:
        path = ctx.options.settings_path
        now = self.clock()
        if not path or now - self._checked < self.RELOAD_CHECK_S:
            return
        self._checked = now
        stamp = _stamp(path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            values = load_file(path)
        except exceptions.OptionsError as e:
            log.error("tokenaddons settings: %s; keeping the settings in force", e)
            return
        self._apply(values, path)

    def _apply(self, values: Values, path: str) -> None:
        pricing.set_overrides(values.prices)
        self.values = values
        self.generation += 1
        if path:
            caps = sum(len(v) for v in values.budgets.values())
            log.info("tokenaddons settings: %s (%d price overrides, %d budget scopes)", path,
                     len(values.prices), caps)


def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(Path(path).expanduser())
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
