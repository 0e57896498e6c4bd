"""The launcher `tokenaddons replay` runs: `mitmdump -n -s <this> --set replay_capture=FILE`."""
from tokenaddons.bundle import loaded as _loaded
from tokenaddons.bundle import replay_addons as _replay_addons

addons = _loaded(_replay_addons())
