"""The launcher for an installed package: `mitmdump -s $(tokenaddons script-path)`."""
from tokenaddons.bundle import addons as _addons
from tokenaddons.bundle import loaded as _loaded

addons = _loaded(_addons())
