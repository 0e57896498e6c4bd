"""The scanners with their shortcuts off: every injection rule and every PII
recognizer run on every text (as before the shortcuts; a PII recognizer on
text with a digit, as ever). What the shortcuts' tests compare findings with,
and their benchmark times."""
from __future__ import annotations

import contextlib
import string
import sys
from collections.abc import Iterator

from tokenaddons.engines import injection, pii


@contextlib.contextmanager
def shortcuts_off(detector: pii.Detector | None = None) -> Iterator[None]:
    saved = injection.RULES, injection.HINTS, injection.BASE64_MIN, pii._digits, pii.IP_PATTERNS
    injection.RULES = tuple((*rule[:3], ("",)) for rule in injection.RULES)  # a hint every text holds
    injection.HINTS = ("",)
    injection.BASE64_MIN = 0
    pii._digits = lambda text: sys.maxsize if any(c in text for c in string.digits) else 0
    pii.IP_PATTERNS = tuple((pattern, mark, 0) for pattern, mark, _ in pii.IP_PATTERNS)
    hints = detector.secret_hints if detector is not None else ()
    if detector is not None:
        detector.secret_hints = ("",)
    try:
        yield
    finally:
        injection.RULES, injection.HINTS, injection.BASE64_MIN, pii._digits, pii.IP_PATTERNS = saved
        if detector is not None:
            detector.secret_hints = hints
