"""The `tokenaddons` command: gathers options and starts things; no logic of its own."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tokenaddons.store import DEFAULT_PATH, health

DEFAULT_PORT = 7677


def launcher_path() -> str:
    return str(Path(__file__).resolve().parent.parent / "launcher.py")


def mitmdump_args(mode: str, host: str, port: int, store: str | None, sets: tuple[str, ...],
                  settings: str | None = None) -> list[str]:
    args = ["-s", launcher_path(), "--mode", mode, "--listen-host", host, "-p", str(port)]
    if store:
        args += ["--set", f"store_path={store}"]
    if settings:
        args += ["--set", f"settings_path={settings}"]
    for s in sets:
        args += ["--set", s]
    return args


@click.group()
def main() -> None:
    """tokenaddons: cheaper, safer, visible LLM calls through mitmproxy."""


# With no --upstream every request goes to its own provider (route_all_providers);
# the mode still needs a target, for requests whose provider nothing names.
EVERY_PROVIDER_MODE = "reverse:https://api.anthropic.com"


def run_mode(upstream: str | None, regular: bool) -> tuple[str, tuple[str, ...]]:
    """The mitmproxy mode and extra options of `tokenaddons run`."""
    if regular:
        return "regular", ()
    if upstream:
        return f"reverse:{upstream}", ()
    # lazy: no connection to the mode's target before a request says where it goes
    return EVERY_PROVIDER_MODE, ("route_all_providers=true", "connection_strategy=lazy")


@main.command()
@click.option("--upstream", default=None,
              help="Reverse-proxy to this provider URL. Without it, one port serves every provider: each request "
                   "goes to its provider's base URL (settings file [providers], else the public endpoint).")
@click.option("--regular", is_flag=True, help="Explicit proxy mode (system-wide, with the CA) instead of reverse.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", "-p", default=DEFAULT_PORT, show_default=True)
@click.option("--store", default=None, help=f"Event store (default {DEFAULT_PATH}).")
@click.option("--settings", default=None, help="TOML settings file (price overrides, budget caps per "
              "provider, model and project).")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Any mitmproxy/tokenaddons option.")
def run(upstream: str | None, regular: bool, host: str, port: int, store: str | None, settings: str | None,
        sets: tuple[str, ...]) -> None:
    """Run the proxy (mitmdump with the tokenaddons bundle)."""
    from mitmproxy.tools.main import mitmdump

    mode, extra = run_mode(upstream, regular)
    sys.exit(mitmdump(mitmdump_args(mode, host, port, store, extra + sets, settings)))


@main.group("keys")
def keys_group() -> None:
    """Provider keys the proxy holds (the OS keychain, through keyring)."""


@keys_group.command("set")
@click.argument("provider")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input instead of a prompt.")
def keys_set(provider: str, from_stdin: bool) -> None:
    """Store PROVIDER's key; `key = "keyring"` in [providers.PROVIDER] makes the proxy send it."""
    from tokenaddons.engines import keys

    key = sys.stdin.readline().strip() if from_stdin else click.prompt(f"{provider} key", hide_input=True).strip()
    if not key:
        raise click.ClickException("no key given")
    try:
        keys.store(provider, key)
    except keys.KeyUnavailable as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"stored the key of {provider} in the keyring ({len(key)} characters)")


@keys_group.command("delete")
@click.argument("provider")
def keys_delete(provider: str) -> None:
    """Forget PROVIDER's key."""
    from tokenaddons.engines import keys

    try:
        gone = keys.delete(provider)
    except keys.KeyUnavailable as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"deleted the key of {provider}" if gone else f"the keyring held no key for {provider}")


@main.command("script-path")
def script_path() -> None:
    """Print the launcher's path, for `mitmdump -s`."""
    click.echo(launcher_path())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", "-p", default=7678, show_default=True)
def sim(host: str, port: int) -> None:
    """Run the local provider simulator (Anthropic, OpenAI, Gemini wire formats)."""
    from tokenaddons.sim import serve

    serve(host, port)


@main.command()
@click.option("--store", default=DEFAULT_PATH, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
def report(store: str, as_json: bool) -> None:
    """Totals, per model and per project, from the event store."""
    from tokenaddons.store import open_for_reading, queries

    path = Path(store).expanduser()
    if not path.exists():
        raise click.ClickException(f"no event store at {path}")
    with open_for_reading(path) as conn:
        data = queries.report(conn)
    data["store_warnings"] = health.warnings(path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        from tokenaddons.ui.views import render_report

        render_report(data)


@main.command()
@click.option("--store", default=DEFAULT_PATH, show_default=True)
@click.option("--window", type=click.Choice(["h", "d", "m"]), default="d", show_default=True,
              help="h: last hour, d: today, m: this month (switch live with the keys h, d, m).")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--width", type=int, default=None, help="Render at this many columns.")
def stats(store: str, window: str, once: bool, width: int | None) -> None:
    """The live stats view over the event store."""
    from rich.console import Console

    from tokenaddons.ui.views import StatsView

    path = Path(store).expanduser()
    if not path.exists():
        raise click.ClickException(f"no event store at {path}")
    view = StatsView(path, window)
    console = Console(width=width)
    if once:
        view.once(console)
    else:
        view.live(console)


@main.command()
@click.option("--store", default=DEFAULT_PATH, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def budget(store: str, as_json: bool) -> None:
    """Each budget window's spend, limit and reset time."""
    from tokenaddons.store import open_for_reading
    from tokenaddons.store.queries import budget_status as status

    path = Path(store).expanduser()
    if not path.exists():
        raise click.ClickException(f"no event store at {path}")
    with open_for_reading(path) as conn:
        windows = status(conn)
    for warning in health.warnings(path):
        click.secho(warning, fg="red", err=as_json)
    if as_json:
        click.echo(json.dumps(windows, indent=2))
    else:
        from tokenaddons.ui.views import render_budget

        render_budget(windows)


@main.command("import-vcr")
@click.argument("cassettes", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="mitmproxy flow file to write.")
def import_vcr(cassettes: tuple[str, ...], out: str) -> None:
    """Convert VCR YAML cassettes into a mitmproxy flow file (replay it with mitmdump -r)."""
    from tokenaddons.vcr import convert

    n = convert([Path(c) for c in cassettes], Path(out))
    click.echo(f"{n} flows written to {out}")


@main.command()
@click.option("--store", default=None, help="Event store for the demo (default: a fresh temporary file).")
@click.option("--requests", "count", default=24, show_default=True, help="How many demo requests to send.")
@click.option("--pause", default=0.0, show_default=True,
              help="Seconds between requests (to watch `tokenaddons stats` move in another terminal).")
def demo(store: str | None, count: int, pause: float) -> None:
    """Run the proxy against the bundled simulator with generated traffic, then report."""
    from tokenaddons.ui.demo import run_demo

    run_demo(store, count, pause=pause)
