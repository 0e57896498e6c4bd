"""Transparent mode, the README's Linux recipe end to end, inside a network
namespace this test creates: an `iptables -t nat OUTPUT` rule redirects every
connection to ports 80 and 443 to `tokenaddons run --transparent`, except the
proxy's own (it runs as another user: the owner match). A client that knows
nothing of any proxy reaches https://api.anthropic.com (a stand-in in the
namespace, named in its hosts file): intercepted with the CA from
`tokenaddons ca init` and metered. A connection to any other host passes
through untouched, with that host's own certificate, and leaves no row."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tokenaddons.test.certs import self_signed
from tokenaddons.test.clients import TOKENADDONS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (ip netns, iptables)"),
    pytest.mark.skipif(not (shutil.which("ip") and shutil.which("iptables") and shutil.which("setpriv")),
                       reason="needs ip, iptables and setpriv (scripts/setup.sh installs iptables)"),
]

PROXY_UID = 65534  # the proxy's own user: its connections upstream are not redirected back to it
PORT = 8080
PROVIDER, OTHER = ("api.anthropic.com", "10.77.0.2"), ("downloads.example.org", "10.77.0.3")


@pytest.fixture
def netns():
    """A network namespace with loopback up, holding two addresses for the stand-ins;
    its own /etc/hosts (ip netns exec mounts /etc/netns/NAME/hosts over it)."""
    name = f"ta-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    etc = Path("/etc/netns") / name
    try:
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{PROVIDER[1]} {PROVIDER[0]}\n{OTHER[1]} {OTHER[0]}\n")

        def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
            return subprocess.run(["ip", "netns", "exec", name, *args], capture_output=True, text=True,
                                  check=check, **kw)

        def start(*args: str, log: Path, env: dict | None = None) -> subprocess.Popen:
            return subprocess.Popen(["ip", "netns", "exec", name, *args], stdout=open(log, "wb"),
                                    stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

        for _, address in (PROVIDER, OTHER):
            run("ip", "addr", "add", f"{address}/32", "dev", "lo")
        run("ip", "link", "set", "lo", "up")
        if run("iptables", "-t", "nat", "-L", check=False).returncode != 0:
            pytest.skip("iptables cannot change the namespace's nat table here")
        yield run, start
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def tail(log: Path) -> str:
    """The proxy log's error lines (mitmdump exits on one logged at start-up), then its end."""
    text = log.read_text()
    errors = [line for line in text.splitlines() if "error" in line.lower() and "Recognizer" not in line]
    return "\n".join(errors[-20:]) + "\n...\n" + text[-3000:]


def wait_listening(run, address: str, port: int, proc: subprocess.Popen, log: Path) -> None:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=0.5).close()"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(tail(log))
        if run(sys.executable, "-c", probe, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {address}:{port}\n{tail(log)}")


def test_the_transparent_recipe_in_a_network_namespace(netns):
    run, start = netns
    # a directory the proxy's user owns (pytest's own is private to root)
    work = Path(tempfile.mkdtemp(prefix="tokenaddons-transparent-"))
    procs: list[subprocess.Popen] = []
    try:
        provider_cert = self_signed(work, "provider", PROVIDER[0])
        other_cert = self_signed(work, "other", OTHER[0])
        for (host, address), (cert, key) in ((PROVIDER, provider_cert), (OTHER, other_cert)):
            log = work / f"{host}.log"
            serve = f"from tokenaddons.sim import serve; serve({address!r}, 443, tls=({str(cert)!r}, {str(key)!r}))"
            procs.append(start(sys.executable, "-c", serve, log=log))
            wait_listening(run, address, 443, procs[-1], log)
        confdir = work / "ca"
        subprocess.run([str(TOKENADDONS), "ca", "init", "--confdir", str(confdir)], check=True, capture_output=True)
        ca = confdir / "mitmproxy-ca-cert.pem"
        shutil.chown(work, PROXY_UID, PROXY_UID)
        for path in work.rglob("*"):
            shutil.chown(path, PROXY_UID, PROXY_UID)
        # the recipe: redirect 80 and 443, except the proxy's own connections
        run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "multiport", "--dports", "80,443",
            "-m", "owner", "!", "--uid-owner", str(PROXY_UID), "-j", "REDIRECT", "--to-ports", str(PORT))
        log = work / "proxy.log"
        proxy = start("setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
                      sys.executable, "-m", "tokenaddons", "run", "--transparent", "-p", str(PORT),
                      "--confdir", str(confdir), "--store", str(work / "events.db"),
                      "--set", f"ssl_verify_upstream_trusted_ca={provider_cert[0]}", log=log, env={"HOME": str(work)})
        procs.append(proxy)
        wait_listening(run, "127.0.0.1", PORT, proxy, log)

        # a client that knows nothing of a proxy: only the CA is trusted
        client = ("import anthropic, httpx, ssl; http = httpx.Client(verify=ssl.create_default_context(cafile=%r)); "
                  "m = anthropic.Anthropic(api_key='sk-ant-test', max_retries=0, http_client=http).messages.create("
                  "model='claude-sonnet-4-5', max_tokens=40, messages=[{'role': 'user', 'content': 'hi'}]); "
                  "print(m.usage.output_tokens)" % str(ca))
        out = run(sys.executable, "-c", client, check=False, timeout=60)
        assert out.returncode == 0, out.stderr + tail(log)
        # another host: through the redirect too, but tunneled: its own certificate is the one that verifies
        other = ("import httpx, ssl; r = httpx.get('https://%s/', verify=ssl.create_default_context(cafile=%r)); "
                 "print(r.status_code)" % (OTHER[0], str(other_cert[0])))
        passed = run(sys.executable, "-c", other, check=False, timeout=60)
        assert passed.returncode == 0 and passed.stdout.strip() == "404", passed.stderr  # the stand-in's answer
        counters = run("iptables", "-t", "nat", "-L", "OUTPUT", "-v", "-n", "-x").stdout
        redirected = int(next(line for line in counters.splitlines() if "REDIRECT" in line).split()[0])
        assert redirected >= 2  # both connections went to the proxy
        stop(procs)  # the proxy's store drains on SIGINT
        conn = sqlite3.connect(work / "events.db")
        rows = conn.execute("SELECT api, status, output_tokens, cost_usd FROM requests").fetchall()
        conn.close()
        assert rows == [("anthropic.messages", 200, int(out.stdout), rows[0][3])] and rows[0][3] > 0
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
