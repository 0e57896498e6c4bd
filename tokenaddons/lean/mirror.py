"""Which mitmproxy a lean replacement was written from.

A replacement does what the mitmproxy functions it stands for do, as their
source reads in the mitmproxy it was written from (11.0.2): it is installed
only where that source is the same, byte for byte. Another mitmproxy keeps
its own functions (logged once), until the replacement is checked against it
and its digest taken. A function Python holds without its source (the
standard library's frozen modules: `Mapping.get`) counts by its qualified
name: what matters there is that mitmproxy still inherits it.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Mirror:
    def __init__(self, what: str, functions: tuple[Callable, ...], digest: str):
        self.what = what
        self.functions = functions
        self.digest = digest

    def source_digest(self) -> str | None:
        """The SHA-256 of the functions' source as installed, None without the
        source of one of mitmproxy's."""
        h = hashlib.sha256()
        for fn in self.functions:
            try:
                h.update(inspect.getsource(fn).encode())
            except (OSError, TypeError):
                if not getattr(fn, "__module__", "").startswith("collections"):
                    return None
                h.update(f"{fn.__module__}.{fn.__qualname__}".encode())
        return h.hexdigest()

    @functools.cached_property
    def refusal(self) -> str:
        """Why the installed mitmproxy keeps its own ("" if it is the one mirrored)."""
        found = self.source_digest()
        if found == self.digest:
            return ""
        log.info("tokenaddons: mitmproxy's %s is not the one tokenaddons.lean mirrors (source digest %s): "
                 "mitmproxy keeps its own", self.what, found)
        return f"source digest {found}"
