"""The warning when the proxy listens beyond loopback with no proxyauth."""
from __future__ import annotations

import logging

import pytest
from mitmproxy.addons.proxyauth import ProxyAuth
from mitmproxy.test import taddons

from tokenaddons.addons.exposure import Exposure


@pytest.mark.parametrize("options, warned", [
    ({"listen_host": ""}, True),  # mitmproxy's default: every interface
    ({"listen_host": "0.0.0.0"}, True),
    ({"listen_host": "192.168.1.20"}, True),
    ({"listen_host": "127.0.0.1"}, False),
    ({"listen_host": "::1"}, False),
    ({"listen_host": "localhost"}, False),
    ({"mode": ["reverse:https://api.anthropic.com@127.0.0.1:7677"]}, False),
    ({"mode": ["reverse:https://api.anthropic.com@0.0.0.0:7677"], "listen_host": "127.0.0.1"}, True),
    ({"proxyauth": "user:secret"}, False),
    ({"server": False}, False),  # mitmdump -n: nothing listens
    ({"mode": ["local"]}, False),
])
def test_a_warning_when_anyone_on_the_network_could_use_the_proxy(caplog, options, warned):
    caplog.set_level(logging.WARNING)
    with taddons.context(ProxyAuth(), Exposure()) as tctx:
        tctx.configure(tctx.master.addons.get("exposure"), **options)
    assert ("no proxyauth" in caplog.text) == warned
    if warned:
        assert "--listen-host 127.0.0.1" in caplog.text
