"""Prices from genai-prices, cache reads and writes included."""
from __future__ import annotations

import pytest

from tokenaddons.engines import pricing
from tokenaddons.engines.usage import Usage


def test_anthropic_cache_reads_and_writes_are_priced_as_such():
    # test_anthropic_cache_real_api.yaml, second call: input 3, cache read 1111, cache write 418 (5m), output 33
    u = Usage(input_tokens=3 + 1111 + 418, cache_read_tokens=1111, cache_write_tokens=418,
              cache_write_5m_tokens=418, output_tokens=33)
    expected = (3 * 3 + 1111 * 0.30 + 418 * 3.75 + 33 * 15) / 1e6
    assert pricing.price("anthropic", "claude-sonnet-4-20250514", u) == pytest.approx(expected, rel=1e-12)


def test_anthropic_one_hour_writes_cost_twice_the_input_price():
    u = Usage(input_tokens=1000, cache_write_tokens=1000, cache_write_1h_tokens=600, cache_write_5m_tokens=400)
    expected = (600 * 6 + 400 * 3.75) / 1e6
    assert pricing.price("anthropic", "claude-sonnet-4-20250514", u) == pytest.approx(expected, rel=1e-12)


def test_openai_cached_tokens_and_gemini():
    u = Usage(input_tokens=2048, cache_read_tokens=1024, output_tokens=100)
    assert pricing.price("openai", "gpt-4o-mini", u) == pytest.approx((1024 * 0.15 + 1024 * 0.075 + 100 * 0.6) / 1e6)
    g = Usage(input_tokens=1000, output_tokens=100)
    assert pricing.price("gemini", "models/gemini-2.5-flash", g) == pytest.approx((1000 * 0.30 + 100 * 2.5) / 1e6)


def test_unknown_model_has_no_price_and_overrides_win():
    assert pricing.price("openai", "no-such-model-xyz", Usage(input_tokens=10)) is None
    assert pricing.price("other", "x", Usage(input_tokens=10)) is None
    pricing.set_overrides({"openai/no-such-model-xyz": {"input_mtok": 1, "output_mtok": 2},
                           "claude-sonnet-4-20250514": {"input_mtok": 10, "output_mtok": 20, "cache_write_mtok": 12.5,
                                                         "cache_read_mtok": 1, "cache_write_1h_mtok": 30}})
    try:
        assert pricing.price("openai", "no-such-model-xyz", Usage(input_tokens=1000, output_tokens=1000)) == \
            pytest.approx(3000 / 1e6)
        u = Usage(input_tokens=100, cache_write_tokens=100, cache_write_1h_tokens=100)
        assert pricing.price("anthropic", "claude-sonnet-4-20250514", u) == pytest.approx(3000 / 1e6)
        assert pricing.unit_prices("anthropic", "claude-sonnet-4-20250514").cache_write_1h == pytest.approx(30e-6)
    finally:
        pricing.set_overrides({})


def test_unit_prices():
    p = pricing.unit_prices("anthropic", "claude-sonnet-4-20250514")
    assert (p.input, p.output, p.cache_read, p.cache_write_5m, p.cache_write_1h) == pytest.approx(
        (3e-6, 15e-6, 0.3e-6, 3.75e-6, 6e-6))


def test_a_provider_the_settings_file_names_is_priced_by_name_or_by_the_api_it_speaks():
    usage = Usage(input_tokens=1000, output_tokens=100)
    try:
        pricing.set_families({"corp-gateway": "anthropic", "groq": "openai"})
        assert pricing.price("corp-gateway", "claude-haiku-4-5", usage) == pricing.price(
            "anthropic", "claude-haiku-4-5", usage)
        assert pricing.price("groq", "llama-3.3-70b-versatile", usage) > 0  # genai-prices knows groq itself
        assert pricing.price("ollama", "llama3", usage) is None  # a local model: no price, unless [prices] sets one
    finally:
        pricing.set_families({})
