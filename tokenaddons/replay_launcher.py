"""The launcher `tokenaddons replay` runs: `mitmdump -n -s <this> --set replay_capture=FILE`."""
from tokenaddons.bundle import replay_addons as _replay_addons

addons = _replay_addons()
