"""The launcher: `mitmdump -s scripts/tokenaddons.py --mode reverse:https://api.anthropic.com`.

It loads the whole tokenaddons bundle, in order, into mitmproxy.
"""
import os
import sys

# Run from a checkout without installing: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tokenaddons.bundle import addons as _addons  # noqa: E402
from tokenaddons.bundle import loaded as _loaded  # noqa: E402

addons = _loaded(_addons())
