"""Token counting with tiktoken, offline."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from tokenaddons.engines import tokens
from tokenaddons.providers import BY_NAME


def run_isolated(code: str, cache_dir, extra_env=None):
    env = {"TIKTOKEN_CACHE_DIR": str(cache_dir), "PATH": "/usr/bin:/bin",
           # any network attempt fails at once
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_counts_are_tiktokens_own():
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("hello world", "gpt-4o") == 2
    assert tokens.encoding_name("gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name("claude-sonnet-4-5") == "cl100k_base"
    assert tokens.count_text("") == 0


def test_loads_offline_into_an_empty_cache_dir(tmp_path):
    out = run_isolated("from tokenaddons.engines import tokens; print(tokens.count_text('hello world', 'gpt-4o'))", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    blob = tokens.BLOB.format("o200k_base")
    assert (tmp_path / hashlib.sha1(blob.encode()).hexdigest()).exists()


def test_a_corrupted_seed_is_rejected_by_tiktokens_hash_check(tmp_path):
    blob = tokens.BLOB.format("cl100k_base")
    (tmp_path / hashlib.sha1(blob.encode()).hexdigest()).write_bytes(b"aGVsbG8= 0\n")
    out = run_isolated("from tokenaddons.engines import tokens; tokens.count_text('hi')", tmp_path)
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


def test_a_long_string_is_estimated_from_samples_close_to_its_exact_count():
    """Estimates run on the event loop: a string over SAMPLED_OVER characters is
    counted from three samples scaled to its length (tiktoken takes a second on
    a megabyte of blank lines), within a few percent of the exact count."""
    from pathlib import Path

    from tokenaddons.engines import tokens

    encoding = tokens.get_encoding("cl100k_base")
    short = "hello world " * 100
    assert tokens.sampled_count(encoding, short) == len(encoding.encode_ordinary(short))
    prose = (Path(__file__).parents[2] / "README.md").read_text() * 3
    for text in (prose, "\n" * 200_000, "def f(x):\n    return x * 2\n" * 8000):
        assert len(text) > tokens.SAMPLED_OVER
        exact = len(encoding.encode_ordinary(text))
        assert abs(tokens.sampled_count(encoding, text) - exact) <= 0.05 * exact


def test_a_home_this_process_cannot_use_falls_back_to_its_own_directory_in_tmp(tmp_path, monkeypatch):
    """A proxy run as another user (nobody, in transparent mode) may not read the
    home it inherited: the encodings are seeded in a directory of its own."""
    import pytest

    from tokenaddons.engines import tokens

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(tokens, "DEFAULT_CACHE", blocker / "tiktoken")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setattr(tokens.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    tokens.get_encoding.cache_clear()
    try:
        assert tokens.count_text("hello world") == 2
        assert tokens.cache_dir().parent == tmp_path / "tmp"
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "mine"))  # the user's own choice: an error
        tokens.get_encoding.cache_clear()
        with pytest.raises(tokens.EncodingUnavailable, match="TIKTOKEN_CACHE_DIR"):
            tokens.get_encoding("cl100k_base")
    finally:
        tokens.get_encoding.cache_clear()
