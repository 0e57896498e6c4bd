from pathlib import Path

from click.testing import CliRunner

from tokenaddons.ui.cli import launcher_path, main, mitmdump_args


def test_script_path_points_at_a_launcher_that_builds_the_bundle():
    out = CliRunner().invoke(main, ["script-path"])
    path = Path(out.output.strip())
    assert out.exit_code == 0 and path == Path(launcher_path()) and path.exists()
    import runpy

    from tokenaddons import bundle
    from tokenaddons.dispatch import Pipeline

    (pipeline,) = runpy.run_path(str(path))["addons"]
    assert isinstance(pipeline, Pipeline)
    assert [type(p) for p in pipeline.parts] == [type(p) for p in bundle.addons()]


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


def test_run_without_upstream_serves_every_provider_on_one_port():
    from tokenaddons.ui.cli import run_mode

    mode, extra = run_mode(None, False)
    assert mode.startswith("reverse:") and "route_all_providers=true" in extra
    assert run_mode("https://api.openai.com", False) == ("reverse:https://api.openai.com", ())
    assert run_mode(None, True) == ("regular", ())


def test_keys_set_and_delete_use_the_keyring_and_never_echo_the_key():
    import keyring
    from keyring.backends import fail

    from tokenaddons.test.keyring import MemoryKeyring

    before = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    try:
        out = CliRunner().invoke(main, ["keys", "set", "openai", "--stdin"], input="sk-proj-secret-1234\n")
        assert out.exit_code == 0 and "sk-proj" not in out.output and "1234" not in out.output
        assert ring.items[("tokenaddons", "openai")] == "sk-proj-secret-1234"
        prompted = CliRunner().invoke(main, ["keys", "set", "anthropic"], input="sk-ant-typed\n")
        assert prompted.exit_code == 0 and "sk-ant-typed" not in prompted.output
        assert ring.items[("tokenaddons", "anthropic")] == "sk-ant-typed"
        assert "deleted" in CliRunner().invoke(main, ["keys", "delete", "openai"]).output
        assert "no key" in CliRunner().invoke(main, ["keys", "delete", "openai"]).output
        keyring.set_keyring(fail.Keyring())
        out = CliRunner().invoke(main, ["keys", "set", "anthropic", "--stdin"], input="sk\n")
        assert out.exit_code != 0 and "no keyring backend" in out.output and "env:ANTHROPIC_API_KEY" in out.output
    finally:
        keyring.set_keyring(before)
