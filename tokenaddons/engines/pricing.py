"""Dollars from usage, at the model's real prices (genai-prices, offline snapshot).

Cache reads and writes are priced as such. genai-prices knows one cache-write
price (Anthropic's 5-minute one); Anthropic bills 1-hour writes at twice the
base input price, so those are repriced here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache

from genai_prices import Usage as GPUsage
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, calc_mtok_price

from tokenaddons.engines.usage import Usage

log = logging.getLogger(__name__)

PROVIDER_IDS = {"anthropic": "anthropic", "openai": "openai", "gemini": "google"}
ONE_HOUR_WRITE_FACTOR = Decimal(2)  # × base input price (Anthropic's published rule)
MTOK = Decimal(1_000_000)

# name -> (prices, 1-hour cache write USD/MTok or None for the 2× rule)
_overrides: dict[str, tuple[ModelPrice, Decimal | None]] = {}
_max_output: dict[str, int] = {}  # name -> the settings file's max_output_tokens
_unknown: set[tuple[str, str]] = set()
# a provider the settings file names -> the API family it speaks (priced as that family
# when genai-prices does not know it by name: a gateway serving Anthropic's models)
_families: dict[str, str] = {}


# keys of a [prices] entry that are genai-prices' own
MODEL_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


@dataclass(frozen=True)
class Limits:
    """How much one exchange with the model can hold (None: not known)."""

    max_output: int | None  # output tokens of one answer (the settings file's max_output_tokens)
    context_window: int | None  # prompt and answer together (genai-prices)


@dataclass(frozen=True)
class UnitPrices:
    """USD per token (not per million), at the base tier."""

    input: float
    output: float
    cache_read: float
    cache_write_5m: float
    cache_write_1h: float


def warm() -> None:
    """Load genai-prices' model table now, as the proxy starts: thousands of
    objects that, loaded by the first request, would stay within the garbage
    collector's reach for good (what start-up loads is frozen out of it)."""
    data_snapshot.get_snapshot()


def _normalize(model: str) -> str:
    return model.removeprefix("models/")


def set_overrides(table: dict[str, dict]) -> None:
    """Prices that win over genai-prices: {"provider/model" or "model": {input_mtok, output_mtok,
    cache_read_mtok, cache_write_mtok, cache_write_1h_mtok}} in USD per million tokens."""
    _overrides.clear()
    _max_output.clear()
    for name, p in table.items():
        mp = ModelPrice(**{k: Decimal(str(v)) for k, v in p.items() if k in MODEL_PRICE_KEYS})
        one_hour = p.get("cache_write_1h_mtok")
        _overrides[name] = (mp, Decimal(str(one_hour)) if one_hour is not None else None)
        if p.get("max_output_tokens"):
            _max_output[name] = int(p["max_output_tokens"])
    model_price.cache_clear()
    unit_prices.cache_clear()
    model_limits.cache_clear()


def set_families(families: dict[str, str]) -> None:
    """{provider name: "anthropic" | "openai" | "gemini"} from the settings file's [providers]."""
    _families.clear()
    _families.update(families)
    model_price.cache_clear()


def _provider_ids(provider: str) -> list[str]:
    """genai-prices provider ids to look a model up under, best first."""
    ids = [PROVIDER_IDS.get(provider, provider)]
    family = _families.get(provider)
    if family in PROVIDER_IDS and PROVIDER_IDS[family] not in ids:
        ids.append(PROVIDER_IDS[family])
    return ids


@lru_cache(maxsize=1024)
def model_price(provider: str, model: str) -> tuple[ModelPrice, Decimal | None] | None:
    """The model's prices and its 1-hour cache-write price (None: Anthropic's 2× rule)."""
    model = _normalize(model)
    if found := _overrides.get(f"{provider}/{model}") or _overrides.get(model):
        return found
    if not model or provider == "other":
        return None
    snapshot = data_snapshot.get_snapshot()
    for provider_id in _provider_ids(provider):
        try:
            _, found_model = snapshot.find_provider_model(model, None, provider_id, None)
            return found_model.get_prices(datetime.now(timezone.utc)), None
        except LookupError:
            continue
    if (provider, model) not in _unknown:
        _unknown.add((provider, model))
        log.warning("tokenaddons: no price known for %s model %r; its cost is left empty", provider, model)
    return None


@lru_cache(maxsize=1024)
def model_limits(provider: str, model: str) -> Limits:
    model = _normalize(model)
    most = _max_output.get(f"{provider}/{model}") or _max_output.get(model)
    window = None
    if provider in PROVIDER_IDS and model:
        try:
            _, info = data_snapshot.get_snapshot().find_provider_model(model, None, PROVIDER_IDS[provider], None)
            window = info.context_window
        except LookupError:
            pass
    return Limits(most, window)


def price(provider: str, model: str, usage: Usage) -> float | None:
    """USD for one exchange's usage; None when the model's price is unknown."""
    found = model_price(provider, model)
    if found is None:
        return None
    mp, one_hour = found
    total = Decimal(mp.calc_price(GPUsage(
        input_tokens=usage.input_tokens, cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens, output_tokens=usage.output_tokens))["total_price"])
    if usage.cache_write_1h_tokens and mp.cache_write_mtok is not None:
        n = usage.cache_write_1h_tokens
        paid_1h = (calc_mtok_price(one_hour, n, usage.input_tokens) if one_hour is not None
                   else calc_mtok_price(mp.input_mtok, n, usage.input_tokens) * ONE_HOUR_WRITE_FACTOR)
        total += paid_1h - calc_mtok_price(mp.cache_write_mtok, n, usage.input_tokens)
    return float(total)


def prompt_cache_saving(provider: str, model: str, usage: Usage, cost: float | None) -> float:
    """What the provider's prompt cache saved on one exchange against paying the
    full input price for every prompt token (negative when writes cost more
    than reads saved)."""
    if cost is None or not (usage.cache_read_tokens or usage.cache_write_tokens):
        return 0.0
    plain = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                  reasoning_tokens=usage.reasoning_tokens)
    full = price(provider, model, plain)
    return (full - cost) if full is not None else 0.0


@lru_cache(maxsize=1024)
def unit_prices(provider: str, model: str) -> UnitPrices | None:
    """Base-tier per-token prices, for pre-flight estimates and savings."""
    found = model_price(provider, model)
    if found is None:
        return None
    mp, one_hour = found

    def per_token(value, fallback: float = 0.0) -> float:
        if value is None:
            return fallback  # already per token
        base = value if isinstance(value, Decimal) else value.base
        return float(Decimal(base) / MTOK)

    inp = per_token(mp.input_mtok)
    return UnitPrices(
        input=inp, output=per_token(mp.output_mtok),
        cache_read=per_token(mp.cache_read_mtok, inp),
        cache_write_5m=per_token(mp.cache_write_mtok, inp),  # no write price (OpenAI, Gemini): writes cost input
        cache_write_1h=per_token(one_hour) if one_hour is not None else inp * float(ONE_HOUR_WRITE_FACTOR),
    )
