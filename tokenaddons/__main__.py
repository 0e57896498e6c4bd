"""`python -m tokenaddons ...`: the `tokenaddons` command."""
from tokenaddons.ui.cli import main

main()
