"""System-wide modes decrypt only provider hosts (mitmproxy's allow_hosts)."""
from __future__ import annotations

import re

import pytest
from mitmproxy import exceptions
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.intercept import Intercept, host_pattern
from tokenaddons.exchange import Exchange


def allowed(patterns: list[str], name: str) -> bool:
    return any(re.search(p, name, re.IGNORECASE) for p in patterns)


@pytest.mark.parametrize("spec,yes,no", [
    ("api.anthropic.com", ["api.anthropic.com:443", "API.Anthropic.com:8443"],
     ["evil-api.anthropic.com:443", "api.anthropic.com.evil.org:443", "xapi.anthropic.com:443"]),
    ("127.0.0.1:8443", ["127.0.0.1:8443"], ["127.0.0.1:443", "127.0.0.10:8443"]),
    ("*.example.com", ["a.example.com:443", "a.b.example.com:80", "example.com:443"], ["badexample.com:443"]),
    ("[::1]:9000", ["::1:9000"], ["::1:9001"]),
])
def test_host_patterns_match_what_mitmproxy_compares(spec, yes, no):
    pattern = host_pattern(spec)
    assert all(re.search(pattern, n, re.IGNORECASE) for n in yes)
    assert not any(re.search(pattern, n, re.IGNORECASE) for n in no)


@pytest.mark.parametrize("bad", ["http://x.com", "a b", "x.com:port", "a*.com", "*.*.com", ":443"])
def test_host_patterns_refuse_what_is_not_a_host(bad):
    with pytest.raises(ValueError):
        host_pattern(bad)


def test_regular_mode_decrypts_only_the_provider_hosts():
    addon = Intercept()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, mode=["regular"])
        hosts = tctx.options.allow_hosts
        for name in ("api.anthropic.com:443", "api.openai.com:443", "generativelanguage.googleapis.com:443"):
            assert allowed(hosts, name)
        assert not allowed(hosts, "pypi.org:443") and not allowed(hosts, "github.com:443")
        tctx.configure(addon, intercept_hosts="api.mistral.ai, 127.0.0.1:8443")
        assert allowed(tctx.options.allow_hosts, "api.mistral.ai:443")
        assert allowed(tctx.options.allow_hosts, "127.0.0.1:8443") and not allowed(tctx.options.allow_hosts,
                                                                                    "127.0.0.1:22")
        tctx.configure(addon, intercept_all_hosts=True)
        assert tctx.options.allow_hosts == []  # mitmproxy's default: everything decrypted


def test_reverse_mode_alone_is_left_as_it_is_and_alongside_keeps_its_target():
    addon = Intercept()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, mode=["reverse:http://127.0.0.1:9000"])
        assert tctx.options.allow_hosts == []
        tctx.configure(addon, mode=["reverse:http://127.0.0.1:9000", "transparent"])
        assert allowed(tctx.options.allow_hosts, "127.0.0.1:9000")
        assert allowed(tctx.options.allow_hosts, "api.anthropic.com:443")


def test_hosts_set_by_hand_win():
    addon = Intercept()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, mode=["regular"], allow_hosts=["^example\\.org:443$"])
        assert tctx.options.allow_hosts == ["^example\\.org:443$"]
    addon = Intercept()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, mode=["regular"], ignore_hosts=["pypi"])
        assert tctx.options.allow_hosts == []


def test_a_bad_extra_host_is_a_clear_error():
    addon = Intercept()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="intercept_hosts"):
            tctx.configure(addon, mode=["regular"], intercept_hosts="https://api.mistral.ai")


def plain_request(host: str, port: int, mode: str = "regular"):
    flow = tflow.tflow()
    flow.request.host, flow.request.port = host, port
    flow.request.headers["host"] = f"{host}:{port}"
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    return flow


def test_plain_http_to_a_host_not_intercepted_is_none_of_ours():
    addon, intake = Intercept(), Intake()
    with taddons.context(addon, intake) as tctx:
        tctx.configure(addon, mode=["regular"])
        other, provider = plain_request("example.org", 80), plain_request("api.openai.com", 80)
        for flow in (other, provider):
            addon.requestheaders(flow)
            intake.request(flow)
        assert Exchange.of(other) is None  # no addon touches it, no row
        assert Exchange.of(provider) is not None
        replayed = plain_request("example.org", 80)
        replayed.is_replay = "request"  # captured traffic replayed is always ours
        addon.requestheaders(replayed)
        intake.request(replayed)
        assert Exchange.of(replayed) is not None


def test_cleared_by_hand_the_provider_hosts_come_back():
    addon = Intercept()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, mode=["regular"], allow_hosts=["^example\\.org:443$"])
        tctx.configure(addon, allow_hosts=[])
        assert allowed(tctx.options.allow_hosts, "api.anthropic.com:443")
        assert not allowed(tctx.options.allow_hosts, "example.org:443")


def test_the_settings_files_providers_are_intercepted_and_follow_its_edits():
    from tokenaddons.addons.settings import Settings
    from tokenaddons.engines.settings_file import Published, parse

    published = Published()
    settings, addon = Settings(published), Intercept(published)
    with taddons.context(settings, addon) as tctx:
        tctx.configure(addon, mode=["regular"])
        assert not allowed(tctx.options.allow_hosts, "llm.internal:8443")
        published.publish(parse({"providers": {
            "gateway": {"base_url": "https://llm.internal:8443", "api": "openai"},
            "anthropic": {"base_url": "https://claude.proxy.example"}}}))
        addon.client_connected(tflow.tclient_conn())  # the next connection sees the file's providers
        hosts = tctx.options.allow_hosts
        assert allowed(hosts, "llm.internal:8443") and not allowed(hosts, "llm.internal:443")
        assert allowed(hosts, "claude.proxy.example:443") and allowed(hosts, "api.anthropic.com:443")
        published.publish(parse({}))
        addon.client_connected(tflow.tclient_conn())
        assert not allowed(tctx.options.allow_hosts, "llm.internal:8443")
