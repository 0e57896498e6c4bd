"""Offline token counting (tiktoken, hash-checked) and pricing (genai-prices)."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from tokenaddons import pricing, tokens
from tokenaddons.providers import BY_NAME
from tokenaddons.usage import Usage


def test_counts_are_tiktokens_own():
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("hello world", "gpt-4o") == 2
    assert tokens.encoding_name("gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name("claude-sonnet-4-5") == "cl100k_base"
    assert tokens.count_text("") == 0


def run_isolated(code: str, cache_dir, extra_env=None):
    env = {"TIKTOKEN_CACHE_DIR": str(cache_dir), "PATH": "/usr/bin:/bin",
           # any network attempt fails at once
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_loads_offline_into_an_empty_cache_dir(tmp_path):
    out = run_isolated("from tokenaddons import tokens; print(tokens.count_text('hello world', 'gpt-4o'))", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    blob = tokens.BLOB.format("o200k_base")
    assert (tmp_path / hashlib.sha1(blob.encode()).hexdigest()).exists()


def test_a_corrupted_seed_is_rejected_by_tiktokens_hash_check(tmp_path):
    blob = tokens.BLOB.format("cl100k_base")
    (tmp_path / hashlib.sha1(blob.encode()).hexdigest()).write_bytes(b"aGVsbG8= 0\n")
    out = run_isolated("from tokenaddons import tokens; tokens.count_text('hi')", tmp_path)
    assert out.returncode != 0
    assert "EncodingUnavailable" in out.stderr


def test_unshipped_encoding_is_a_clear_error():
    with pytest.raises(tokens.EncodingUnavailable, match="not shipped"):
        tokens.get_encoding("r50k_base")


def test_request_estimate_counts_text_and_tools_not_media():
    api = BY_NAME["anthropic.messages"]
    body = {"model": "claude-sonnet-4-5", "system": "You are terse.",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hello world " * 50},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100000}}]}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}
    n = tokens.estimate_input_tokens(api, body)
    assert 100 < n < 200


# Published prices (USD per million tokens) the expectations below are computed from:
# claude-sonnet-4: input 3, cache write 5m 3.75, cache write 1h 6 (2x input), cache read 0.30, output 15
# gpt-4o-mini: input 0.15, cached input 0.075, output 0.60 ; gemini-2.5-flash: input 0.30, output 2.50

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
