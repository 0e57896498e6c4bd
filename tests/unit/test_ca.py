"""`tokenaddons ca` and `tokenaddons env`: the CA made usable."""
from __future__ import annotations

import os
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import certifi
import pytest
from click.testing import CliRunner

from tokenaddons.ca import CA, KEY_FILES, default_confdir, install_plan
from tokenaddons.shellenv import render, variables
from tokenaddons.test.clients import TOKENADDONS, eval_env
from tokenaddons.ui.cli import main


def invoke(*args: str):
    out = CliRunner().invoke(main, list(args))
    assert out.exit_code == 0, out.output
    return out


def test_init_creates_mitmproxys_files_with_the_key_private(tmp_path):
    confdir = tmp_path / "certs"
    out = invoke("ca", "init", "--confdir", str(confdir))
    cert = Path(out.stdout.strip())
    assert cert == confdir / "mitmproxy-ca-cert.pem" and cert.exists()
    for name in KEY_FILES:
        assert stat.S_IMODE((confdir / name).stat().st_mode) == 0o600, name
    assert b"PRIVATE KEY" in (confdir / "mitmproxy-ca.pem").read_bytes()
    assert b"PRIVATE KEY" not in cert.read_bytes()
    key = (confdir / "mitmproxy-ca.pem").read_bytes()
    invoke("ca", "init", "--confdir", str(confdir))  # once: a second init keeps the CA clients trust
    assert (confdir / "mitmproxy-ca.pem").read_bytes() == key
    assert invoke("ca", "path", "--confdir", str(confdir)).stdout.strip() == str(cert)


def test_mitmproxy_signs_with_the_ca_it_finds_in_the_confdir(tmp_path):
    from mitmproxy.certs import CertStore

    authority = CA.at(tmp_path)
    authority.init()
    store = CertStore.from_store(tmp_path, "mitmproxy", 2048)
    leaf = store.get_cert("api.anthropic.com", [])
    assert leaf.cert.issuer == store.default_ca.subject
    assert store.default_ca.to_pem() == authority.cert.read_bytes()


def test_path_and_bundle_without_a_ca_say_what_to_do(tmp_path):
    for command in (["ca", "path"], ["ca", "bundle"], ["ca", "install", "--dry-run"]):
        out = CliRunner().invoke(main, [*command, "--confdir", str(tmp_path / "none")])
        assert out.exit_code != 0 and "tokenaddons ca init" in out.output, command


def test_the_bundle_is_certifis_roots_plus_the_ca(tmp_path):
    invoke("ca", "init", "--confdir", str(tmp_path))
    bundle = Path(invoke("ca", "bundle", "--confdir", str(tmp_path)).stdout.strip())
    content = bundle.read_bytes()
    assert content.startswith(Path(certifi.where()).read_bytes().rstrip(b"\n"))
    assert content.rstrip().endswith((tmp_path / "mitmproxy-ca-cert.pem").read_bytes().rstrip())
    context = ssl.create_default_context(cafile=str(bundle))
    assert len(context.get_ca_certs()) == len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs()) + 1
    mtime = bundle.stat().st_mtime_ns
    invoke("ca", "bundle", "--confdir", str(tmp_path))
    assert bundle.stat().st_mtime_ns == mtime  # unchanged: not rewritten
    other = tmp_path / "elsewhere" / "roots.pem"
    invoke("ca", "bundle", "--confdir", str(tmp_path), "--out", str(other))
    assert other.read_bytes() == content


def test_a_checkout_keeps_its_ca_in_certs(monkeypatch):
    monkeypatch.delenv("TOKENADDONS_CONFDIR", raising=False)
    root = Path(__file__).resolve().parents[2]
    assert default_confdir() == root / "certs"
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    keys = [f"certs/{name}" for name in KEY_FILES]
    ignored = subprocess.run(["git", "check-ignore", *keys], cwd=root, capture_output=True, text=True)
    assert ignored.stdout.split() == keys  # the private key is never committed


def test_install_plans_per_system(tmp_path):
    authority = CA.at(tmp_path)
    debian = install_plan(authority, "Linux", root=True,
                          which=lambda name: "/usr/sbin/" + name if name == "update-ca-certificates" else None)
    assert debian.runnable and debian.commands == [
        ["install", "-D", "-m", "0644", str(authority.cert), "/usr/local/share/ca-certificates/tokenaddons.crt"],
        ["update-ca-certificates"]]
    user = install_plan(authority, "Linux", root=False, which=lambda name: "/usr/sbin/" + name)
    assert not user.runnable and all(c[0] == "sudo" for c in user.commands)
    fedora = install_plan(authority, "Linux", root=True,
                          which=lambda name: "/usr/bin/" + name if name == "update-ca-trust" else None)
    assert fedora.commands[-1] == ["update-ca-trust", "extract"]
    mac = install_plan(authority, "Darwin")
    assert not mac.runnable and mac.commands[0][:3] == ["sudo", "security", "add-trusted-cert"]
    windows = install_plan(authority, "Windows")
    assert windows.commands == [["certutil", "-addstore", "root", str(tmp_path.resolve() / "mitmproxy-ca-cert.cer")]]
    assert not install_plan(authority, "Linux", which=lambda name: None).commands


def test_install_dry_run_prints_the_commands(tmp_path):
    invoke("ca", "init", "--confdir", str(tmp_path))
    out = invoke("ca", "install", "--dry-run", "--confdir", str(tmp_path))
    assert str(tmp_path / "mitmproxy-ca-cert.pem") in out.stdout


def test_eval_env_just_works(tmp_path):
    confdir = tmp_path / "my certs"  # a space: every value is quoted
    seen = eval_env("--port", "7799", "--confdir", f"'{confdir}'",
                     environ={**os.environ, "NO_PROXY": "intranet.example,localhost"})
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert seen[name] == "http://127.0.0.1:7799"
    assert seen["NO_PROXY"] == seen["no_proxy"] == "localhost,127.0.0.1,::1,intranet.example"
    assert seen["NODE_EXTRA_CA_CERTS"] == seen["CODEX_CA_CERTIFICATE"] == str(confdir / "mitmproxy-ca-cert.pem")
    assert seen["SSL_CERT_FILE"] == seen["REQUESTS_CA_BUNDLE"] == str(confdir / "tokenaddons-ca-bundle.pem")
    for name in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"):
        assert Path(seen[name]).is_file()  # created on first use: nothing else to run
    undone = subprocess.run(["bash", "-c", f'export HTTPS_PROXY=x; eval "$({TOKENADDONS} env --unset)"; '
                             'echo "[${HTTPS_PROXY-unset}]"'], capture_output=True, text=True, check=True)
    assert undone.stdout.strip() == "[unset]"


def test_transparent_mode_needs_only_the_ca(tmp_path):
    seen = eval_env("--ca-only", "--confdir", str(tmp_path), environ={"PATH": os.environ["PATH"]})
    assert not {"HTTPS_PROXY", "https_proxy", "NO_PROXY"} & set(seen)
    assert seen["SSL_CERT_FILE"] == str(tmp_path / "tokenaddons-ca-bundle.pem")


def test_fish_and_powershell_lines(tmp_path):
    values = variables("http://127.0.0.1:7677", CA.at(tmp_path / "it's"), environ={})
    fish = render(values, "fish")
    assert "set -gx HTTPS_PROXY 'http://127.0.0.1:7677';" in fish
    assert "set -gx SSL_CERT_FILE '" + str(tmp_path / "it\\'s" / "tokenaddons-ca-bundle.pem") + "';" in fish
    ps = render(values, "powershell")
    assert "$env:HTTPS_PROXY = 'http://127.0.0.1:7677'" in ps
    assert "$env:NODE_EXTRA_CA_CERTS = '" + str(tmp_path / "it''s" / "mitmproxy-ca-cert.pem") + "'" in ps
    if shutil.which("fish"):
        done = subprocess.run(["fish", "-c", fish + "echo $SSL_CERT_FILE"], capture_output=True, text=True)
        assert done.stdout.strip() == values["SSL_CERT_FILE"]


@pytest.mark.parametrize("shell", ["sh", "fish", "powershell"])
def test_every_shell_sets_the_same_variables(tmp_path, shell):
    values = variables("http://127.0.0.1:1", CA.at(tmp_path), environ={})
    text = render(values, shell)
    assert all(name in text for name in values) and len(text.splitlines()) == len(values)
