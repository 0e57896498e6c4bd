"""Structured settings from one TOML file, named by the option `settings_path`.

Scalar tunables are mitmproxy options of the addon that owns them; what does
not fit in an option lives here:

    [prices."anthropic/claude-opus-4-8"]      # USD per million tokens; wins over genai-prices
    input_mtok = 5
    output_mtok = 25
    cache_read_mtok = 0.5
    cache_write_mtok = 6.25                   # 5-minute writes
    cache_write_1h_mtok = 10                  # optional: else Anthropic's 2x input rule
    max_output_tokens = 64000                 # optional: the most one answer holds (budget reservations)

    [budget.provider.anthropic]               # caps per provider ...
    daily_usd = 20
    [budget.model."claude-opus-*"]            # ... per model (shell-style pattern) ...
    hourly_usd = 2
    [budget.project.nightly-evals]            # ... and for one named project
    monthly_usd = 50

    [providers.anthropic]                     # where each provider is reached, whose key it gets
    base_url = "https://api.anthropic.com"
    key = "keyring"                           # or "env:VAR"; absent: the client's own credential
    [aliases]
    fast = "anthropic/claude-haiku-4-5"
    [[routes]]                                # the model asked for -> a chain tried in order
    match = "claude-sonnet-*"
    fallbacks = ["anthropic/claude-sonnet-4", "openai/gpt-4.1"]

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
from pathlib import Path

from mitmproxy import ctx, exceptions

from tokenaddons.engines import pricing
from tokenaddons.engines.settings_file import Published, Values, parse

log = logging.getLogger(__name__)



def load_file(path: str) -> Values:
    try:
        with open(Path(path).expanduser(), "rb") as f:
            return parse(tomllib.load(f))
    except OSError as e:
        raise exceptions.OptionsError(f"settings_path: cannot read {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise exceptions.OptionsError(f"settings_path: {path}: {e}") from None


class Settings:
    """Loads the TOML file and publishes it (`Published`, shared by the bundle
    with the addons that read it). Prices apply at once. An edited file is picked up
    within RELOAD_CHECK_S, at the next request or connection; an edit with a
    mistake is logged and the settings in force are kept."""

    RELOAD_CHECK_S = 1.0

    def __init__(self, published: Published | None = None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.published = published if published is not None else Published()
        self._stamp: tuple | None = None  # (mtime_ns, size) of the file last read
        self._checked = 0.0
        self.path = ""  # settings_path, as configured

    def load(self, loader) -> None:
        loader.add_option("settings_path", str, "",
                          "TOML file with structured settings: price overrides, budget caps per "
                          "provider, model and project, providers, aliases and routes (empty = none). "
                          "Edits are picked up while running.")

    def configure(self, updated) -> None:
        if "settings_path" not in updated:
            return
        path = ctx.options.settings_path
        self._stamp = _stamp(path) if path else None
        self._apply(load_file(path) if path else Values(), path)
        self.path = path  # (a file that cannot be read is refused, and the option with it)

    def request(self, flow) -> None:
        self.check()

    def client_connected(self, client) -> None:
        # a connection too: whether it is decrypted may depend on the file's providers
        self.check()

    def check(self) -> None:
        """Load the file again if it changed (looked at once per RELOAD_CHECK_S at most)."""
        path = self.path
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
        pricing.set_families({name: p.api for name, p in values.providers.items()})
        self.published.publish(values)
        if path:
            caps = sum(len(v) for v in values.budgets.values())
            log.info("tokenaddons settings: %s (%d price overrides, %d budget scopes, %d providers, "
                     "%d aliases, %d routes)", path, len(values.prices), caps, len(values.providers),
                     len(values.aliases), len(values.routes))



def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(Path(path).expanduser())
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
