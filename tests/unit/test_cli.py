from pathlib import Path

from click.testing import CliRunner

from tokenaddons.ui.cli import launcher_path, main, mitmdump_args


def test_script_path_points_at_a_launcher_that_builds_the_bundle():
    out = CliRunner().invoke(main, ["script-path"])
    path = Path(out.output.strip())
    assert out.exit_code == 0 and path == Path(launcher_path()) and path.exists()
    assert "addons = _addons()" in path.read_text()


def test_run_defaults_listen_on_loopback_7677_in_reverse_mode():
    args = mitmdump_args("reverse:https://api.anthropic.com", "127.0.0.1", 7677, None, ("cache_ttl=60",))
    assert args[:2] == ["-s", launcher_path()]
    assert args[args.index("--mode") + 1] == "reverse:https://api.anthropic.com"
    assert args[args.index("--listen-host") + 1] == "127.0.0.1"
    assert args[args.index("-p") + 1] == "7677"
    assert args[-2:] == ["--set", "cache_ttl=60"]


def test_run_takes_the_teams_redis_from_the_environment(monkeypatch):
    import mitmproxy.tools.main

    seen = []
    monkeypatch.setattr(mitmproxy.tools.main, "mitmdump", lambda args: seen.append(args) or 0)
    monkeypatch.setenv("TOKENADDONS_REDIS_URL", "redis://:pw@db:6379/0")
    assert CliRunner().invoke(main, ["run"]).exit_code == 0
    args = seen[0]
    assert args[args.index("redis_url=redis://:pw@db:6379/0") - 1] == "--set"


def test_report_on_a_missing_store_is_a_clear_error(tmp_path):
    out = CliRunner().invoke(main, ["report", "--store", str(tmp_path / "none.db")])
    assert out.exit_code != 0 and "no event store" in out.output
