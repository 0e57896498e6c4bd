"""The settings file's contents, validated, and the copy in force that addons share.

No I/O and no mitmproxy here: `parse` takes a parsed TOML document and raises
ValueError naming the bad key; the Settings addon reads the file and publishes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok",
              "max_output_tokens")
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


def _count(where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where} must be a positive whole number, not {value!r}")
    return value


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
        out.prices[model] = {k: _count(f"{where} {k}", v) if k == "max_output_tokens" else _amount(f"{where} {k}", v)
                             for k, v in table.items()}
    budget = _table("[budget]", doc.get("budget", {}))
    _unknown("[budget]", budget, BUDGET_SCOPES)
    for kind in BUDGET_SCOPES:
        for name, table in _table(f"[budget.{kind}]", budget.get(kind, {})).items():
            where = f"[budget.{kind}.{name!r}]"
            _unknown(where, _table(where, table), BUDGET_KEYS)
            caps = {k.removesuffix("_usd"): _amount(f"{where} {k}", v) for k, v in table.items()}
            out.budgets.setdefault(kind, {})[name] = caps
    return out


class Published:
    """The settings in force. The bundle hands one instance to the Settings
    addon, which publishes each load, and to every addon that reads them;
    `generation` changes with every load, so readers know to re-sync."""

    def __init__(self) -> None:
        self.values = Values()
        self.generation = 0

    def publish(self, values: Values) -> None:
        self.values = values
        self.generation += 1
