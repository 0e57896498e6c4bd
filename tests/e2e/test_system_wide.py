"""System-wide: `tokenaddons run --regular` with the CA from `tokenaddons ca init`.
Provider hosts are intercepted and metered; any other host is tunneled untouched
(the client sees that host's own certificate, no row is written); a shell that
ran `eval "$(tokenaddons env)"` puts Claude Code and the Python SDKs behind it.

The providers are TLS stand-ins (the simulator serving HTTPS), named by the
settings file's `[providers]`, on loopback addresses other than 127.0.0.1
(which `tokenaddons env` keeps off the proxy)."""
from __future__ import annotations

import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx
import pytest
from mitmproxy import io

from tests.conftest import needs_client
from tokenaddons.process import Service, free_port
from tokenaddons.sim import Simulator
from tokenaddons.test import clients
from tokenaddons.test.certs import self_signed

pytestmark = pytest.mark.integration

PROVIDER_HOST, OTHER_HOST = "127.0.0.2", "127.0.0.3"


class Run(Service):
    """`tokenaddons run ARGS` on a free port."""

    def __init__(self, workdir: Path, *args: str):
        self.store = workdir / "events.db"
        port = free_port()
        super().__init__([str(clients.TOKENADDONS), "run", "-p", str(port), "--store", str(self.store),
                          "--set", "termlog_verbosity=info", *args], workdir, port, "run.log")

    def rows(self) -> list[dict]:
        self.stop()
        conn = sqlite3.connect(self.store)
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
        conn.close()
        return rows


@pytest.fixture
def stand_ins(tmp_path):
    """A provider stand-in and some other HTTPS host, each with its own self-signed certificate."""
    provider_cert = self_signed(tmp_path / "certs", "provider", PROVIDER_HOST)
    other_cert = self_signed(tmp_path / "certs", "other", OTHER_HOST)
    with Simulator(PROVIDER_HOST, tls=tuple(map(str, provider_cert))) as provider, \
            Simulator(OTHER_HOST, tls=tuple(map(str, other_cert))) as other:
        provider.cert, other.cert = provider_cert[0], other_cert[0]
        yield provider, other


@pytest.fixture
def regular(tmp_path, stand_ins):
    """The CA made by `tokenaddons ca init`, and `tokenaddons run --regular` using it."""
    provider, _ = stand_ins
    confdir = tmp_path / "ca"
    done = subprocess.run([str(clients.TOKENADDONS), "ca", "init", "--confdir", str(confdir)],
                          capture_output=True, text=True, check=True)
    ca = Path(done.stdout.strip())
    work = tmp_path / "proxy"
    work.mkdir()
    settings = work / "settings.toml"  # the providers' base URLs point at the stand-in
    settings.write_text("".join(f'[providers.{name}]\nbase_url = "{provider.url}"\n' for name in ("anthropic", "openai")))
    proxy = Run(work, "--regular", "--confdir", str(confdir), "--capture", str(work / "session.flow"),
                "--settings", str(settings),
                # the proxy trusts the stand-in's certificate as it would a provider's
                "--set", f"ssl_verify_upstream_trusted_ca={provider.cert}")
    yield proxy, ca, confdir
    proxy.stop()


def peer_certificate(response: httpx.Response) -> bytes:
    return response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)


def test_providers_are_intercepted_and_other_hosts_tunneled_untouched(regular, stand_ins):
    proxy, ca, _ = regular
    provider, other = stand_ins
    trusting_the_ca = httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(ca)))
    sdk = anthropic.Anthropic(base_url=provider.url, api_key="sk-ant-test", max_retries=0,
                              http_client=trusting_the_ca)
    answer = sdk.messages.create(model="claude-sonnet-4-5", max_tokens=40,
                                 messages=[{"role": "user", "content": "through the proxy"}])
    assert provider.upstream_calls == 1
    # the other host: reached through the same proxy, trusting only that host's own
    # certificate (a certificate made by the proxy's CA would fail the handshake)
    trusting_only_it = httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(other.cert)))
    passed = trusting_only_it.post(f"{other.url}/v1/messages", json={
        "model": "claude-sonnet-4-5", "max_tokens": 40, "messages": [{"role": "user", "content": "not ours"}]})
    assert passed.status_code == 200 and other.upstream_calls == 1
    der = ssl.PEM_cert_to_DER_cert(other.cert.read_text())
    assert peer_certificate(passed) == der
    with pytest.raises(httpx.ConnectError):  # and the proxy's CA does not vouch for it: nothing was forged
        httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(ca))).get(other.url)
    rows = proxy.rows()
    assert len(rows) == 1  # the provider's exchange only: the other host left no row
    row = rows[0]
    assert (row["api"], row["status"], row["output_tokens"]) == ("anthropic.messages", 200,
                                                                  answer.usage.output_tokens)
    assert row["cost_usd"] > 0
    with open(proxy.log.parent / "session.flow", "rb") as f:  # --capture saved the provider's exchange only
        assert [flow.request.pretty_host for flow in io.FlowReader(f).stream()] == [PROVIDER_HOST]


@pytest.mark.parametrize("client", [
    pytest.param("claude_code", marks=needs_client(clients.CLAUDE, "Claude Code")),
    pytest.param("codex", marks=needs_client(clients.CODEX, "Codex CLI")), "python_sdk"])
def test_eval_env_puts_clients_behind_the_proxy(regular, stand_ins, tmp_path, client):
    proxy, ca, confdir = regular
    provider, _ = stand_ins
    env = clients.eval_env("--port", str(proxy.port), "--confdir", str(confdir))
    assert env["HTTPS_PROXY"] == proxy.url and env["NODE_EXTRA_CA_CERTS"] == str(ca)
    if client == "claude_code":
        keys = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "NODE_EXTRA_CA_CERTS")
        out = clients.claude_code(tmp_path / "home", tmp_path, provider.url, env={k: env[k] for k in keys})
        assert out.returncode == 0, out.stderr + out.stdout
        assert "tokenaddons-42" in out.stdout  # its tool loop ran through the proxy
    elif client == "codex":
        keys = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "CODEX_CA_CERTIFICATE")
        out = clients.codex(tmp_path / "home", tmp_path, f"{provider.url}/v1", env={k: env[k] for k in keys})
        assert out.returncode == 0, out.stderr + out.stdout
        assert "tokenaddons-42" in out.stdout
    else:
        script = ("import anthropic; m = anthropic.Anthropic(base_url=%r, api_key='sk-ant-test', max_retries=0)"
                  ".messages.create(model='claude-sonnet-4-5', max_tokens=40, messages=[{'role': 'user', "
                  "'content': 'hi'}]); print(m.usage.output_tokens)" % provider.url)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    rows = [r for r in proxy.rows() if r["api"] in ("anthropic.messages", "openai.responses")]
    sent = [r for r in provider.requests if r.path.startswith(("/v1/messages", "/v1/responses"))]
    assert len(rows) == len(sent) >= 1
    assert all(r["status"] == 200 and r["cost_usd"] > 0 for r in rows)
    if client == "python_sdk":
        assert rows[0]["output_tokens"] == int(out.stdout)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("unshare")
                    or not shutil.which("update-ca-certificates"),
                    reason="needs root, unshare and update-ca-certificates (Debian/Ubuntu)")
def test_ca_install_adds_the_ca_to_the_system_trust_store(tmp_path):
    from mitmproxy.certs import CertStore

    from tokenaddons.ca import CA

    authority = CA.at(tmp_path / "ca")
    authority.init()
    leaf = tmp_path / "leaf.pem"  # what the proxy shows a client for a provider host
    leaf.write_bytes(CertStore.from_store(authority.confdir, "mitmproxy", 2048).get_cert(
        "api.anthropic.com", []).cert.to_pem())
    # in a mount namespace of its own, on copies of the trust store: the machine's own is untouched
    copies = " ".join(f"cp -a {d} {tmp_path}/store{i} && mount --bind {tmp_path}/store{i} {d};"
                      for i, d in enumerate(("/etc/ssl/certs", "/usr/local/share/ca-certificates")))
    verify = f"openssl verify -CApath /etc/ssl/certs {leaf}"
    script = (f"set -e; mount --make-rprivate /; {copies} if {verify} >/dev/null 2>&1; then exit 3; fi; "
              f"{clients.TOKENADDONS} ca install --confdir {authority.confdir}; "
              f"{verify}; openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt {leaf}")
    done = subprocess.run(["unshare", "--mount", "bash", "-c", script], capture_output=True, text=True)
    assert done.returncode != 3, "the leaf verified before the CA was installed"
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": OK") == 2 and "installed" in done.stderr
    assert not Path("/usr/local/share/ca-certificates/tokenaddons.crt").exists()
