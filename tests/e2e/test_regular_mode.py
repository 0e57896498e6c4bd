"""`--mode regular`: tokenaddons as an explicit proxy (system-wide use). Plain
HTTP is proxied as is; HTTPS goes through CONNECT, mitmproxy's CA signs the
client side, and the provider (the simulator serving TLS) is reached over TLS.
Both are metered like reverse-mode traffic."""
from __future__ import annotations

import ssl

import anthropic
import httpx
import openai
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_sim(tmp_path):
    """The simulator serving HTTPS with a self-signed certificate for 127.0.0.1."""
    from tokenaddons.sim import Simulator
    from tokenaddons.test.certs import self_signed

    cert_file, key_file = self_signed(tmp_path, "sim", "127.0.0.1")
    with Simulator(tls=(str(cert_file), str(key_file))) as sim:
        sim.ca = cert_file
        yield sim


def test_plain_http_through_the_explicit_proxy(make_proxy, sim):
    # the simulator is a provider here: only provider hosts are intercepted
    proxy = make_proxy("", {"intercept_hosts": f"127.0.0.1:{sim.port}"}, mode="regular")
    c = anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0,
                            http_client=httpx.Client(proxy=proxy.url))
    m = c.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    [row] = proxy.rows(1)
    assert (row["api"], row["status"], row["input_tokens"], row["output_tokens"]) == (
        "anthropic.messages", 200, m.usage.input_tokens, m.usage.output_tokens)


def test_https_through_connect_with_the_proxy_ca(make_proxy, tls_sim):
    # mitmproxy checks the provider's certificate against this CA (the simulator's own)
    proxy = make_proxy("", {"ssl_verify_upstream_trusted_ca": str(tls_sim.ca),
                            "intercept_hosts": f"127.0.0.1:{tls_sim.port}"}, mode="regular")
    ca = proxy.workdir / "mitmproxy" / "mitmproxy-ca-cert.pem"  # what a user installs system-wide
    client = httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(ca)))
    o = openai.OpenAI(base_url=tls_sim.url + "/v1", api_key="k", max_retries=0, http_client=client)
    chunks = list(o.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "over tls"}]))
    c = anthropic.Anthropic(base_url=tls_sim.url, api_key="k", max_retries=0, http_client=client)
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=50,
                           messages=[{"role": "user", "content": "over tls"}]) as s:
        final = s.get_final_message()
    assert chunks and final.content
    rows = proxy.rows(2)
    assert [(r["api"], r["stream"], r["status"], r["complete"]) for r in rows] == [
        ("openai.chat", 1, 200, 1), ("anthropic.messages", 1, 200, 1)]
    assert rows[1]["output_tokens"] == final.usage.output_tokens and rows[0]["output_tokens"] > 0
    assert all(r.headers.get("Host", r.headers.get("host", "")).startswith("127.0.0.1") for r in tls_sim.requests)
