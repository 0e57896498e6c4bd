"""The launcher for an installed package: `mitmdump -s $(tokenaddons script-path)`."""
from tokenaddons.bundle import addons as _addons

addons = _addons()
