"""When a regular expression pass lets other threads run.

The `regex` module can release the GIL while it matches (`concurrent=True`):
scans of long texts run in worker threads beside mitmproxy's event loop, which
must not wait for them. On a short text the release costs more than the match
(about 1 µs a pass), and on the event loop it hands the GIL to another thread
in the middle of a request: short texts keep it.
"""
from __future__ import annotations

RELEASE_GIL_OVER = 4096  # characters


def release_gil(text: str) -> bool:
    """The `concurrent` argument of a pattern's pass over `text`."""
    return len(text) > RELEASE_GIL_OVER
