"""The certificate authority mitmproxy signs intercepted HTTPS with, and what
makes clients trust it.

The CA is mitmproxy's own set of files (`mitmproxy-ca.pem` holds the private key
and the certificate, `mitmproxy-ca-cert.pem` the certificate alone), kept in one
confdir so that `mitmdump --set confdir=DIR` uses it: `certs/` in a checkout,
`~/.tokenaddons/certs` for an installed copy, or `$TOKENADDONS_CONFDIR`. Files
holding the private key are mode 0600 and never leave that folder.

`SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE` replace Python's trust store rather than
add to it, so Python clients get one bundle: certifi's roots plus this CA.
"""
from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

ENV_CONFDIR = "TOKENADDONS_CONFDIR"
BASENAME = "mitmproxy"  # mitmproxy's own file names: its tlsconfig finds them in the confdir
KEY_FILES = (f"{BASENAME}-ca.pem", f"{BASENAME}-ca.p12")  # the files that hold the private key
BUNDLE_NAME = "tokenaddons-ca-bundle.pem"
TRUST_NAME = "tokenaddons"  # the name the CA is installed under in a system trust store
KEY_SIZE = 2048  # mitmproxy's default `key_size`


def checkout_root() -> Path | None:
    """The checkout this package runs from, or None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    if (root / "scripts" / "tokenaddons.py").is_file() and (root / "certs").is_dir():
        return root
    return None


def default_confdir() -> Path:
    if os.environ.get(ENV_CONFDIR):
        return Path(os.environ[ENV_CONFDIR]).expanduser()
    root = checkout_root()
    return root / "certs" if root is not None else Path.home() / ".tokenaddons" / "certs"


@dataclass(frozen=True)
class CA:
    confdir: Path

    @classmethod
    def at(cls, confdir: str | Path | None = None) -> CA:
        return cls(Path(confdir).expanduser().resolve() if confdir else default_confdir())

    @property
    def key(self) -> Path:
        return self.confdir / KEY_FILES[0]

    @property
    def cert(self) -> Path:
        return self.confdir / f"{BASENAME}-ca-cert.pem"

    @property
    def cert_cer(self) -> Path:
        """The certificate under the `.cer` name Windows tools expect (same PEM content)."""
        return self.confdir / f"{BASENAME}-ca-cert.cer"

    @property
    def bundle(self) -> Path:
        return self.confdir / BUNDLE_NAME

    def exists(self) -> bool:
        return self.key.is_file() and self.cert.is_file()

    def init(self) -> bool:
        """Create the CA unless it exists; True if it was created now. Either
        way the files holding the private key end up readable by the owner only."""
        from mitmproxy.certs import CertStore

        created = False
        if not self.exists():
            CertStore.create_store(self.confdir, BASENAME, KEY_SIZE, organization="tokenaddons",
                                   cn="tokenaddons CA")
            created = True
        for name in KEY_FILES:
            if (self.confdir / name).exists():
                os.chmod(self.confdir / name, 0o600)
        return created

    def require(self) -> None:
        if not self.exists():
            raise FileNotFoundError(f"no CA in {self.confdir}: run `tokenaddons ca init` first")

    def write_bundle(self, out: Path | None = None) -> Path:
        """certifi's roots plus this CA in one PEM file (rewritten only when it
        would change, so running this from every new shell costs a read)."""
        import certifi

        self.require()
        out = Path(out) if out else self.bundle
        roots = Path(certifi.where()).read_bytes()
        content = roots.rstrip(b"\n") + b"\n\n# tokenaddons CA (" + str(self.cert).encode() + b")\n" + \
            self.cert.read_bytes()
        try:
            if out.read_bytes() == content:
                return out
        except OSError:
            pass
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(content)
        os.chmod(tmp, 0o644)
        tmp.replace(out)
        return out


@dataclass(frozen=True)
class InstallPlan:
    """How to add the CA to this system's trust store: the commands, and
    whether this process can run them itself."""

    commands: list[list[str]]
    runnable: bool
    why: str = ""  # when not runnable: why, and what to do


def install_plan(ca: CA, system: str | None = None, root: bool | None = None,
                 which=shutil.which) -> InstallPlan:
    system = system or platform.system()
    root = (os.geteuid() == 0) if root is None and hasattr(os, "geteuid") else bool(root)
    cert = str(ca.cert)
    if system == "Darwin":
        return InstallPlan([["sudo", "security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k",
                             "/Library/Keychains/System.keychain", cert]], False,
                           "macOS asks for an administrator's password: run this in a terminal")
    if system == "Windows":
        return InstallPlan([["certutil", "-addstore", "root", str(ca.cert_cer)]], False,
                           "run this in an administrator's command prompt")
    if system == "Linux":
        if which("update-ca-certificates"):  # Debian, Ubuntu, Alpine
            dest = f"/usr/local/share/ca-certificates/{TRUST_NAME}.crt"
            commands = [["install", "-D", "-m", "0644", cert, dest], ["update-ca-certificates"]]
        elif which("update-ca-trust"):  # Fedora, RHEL, Arch
            dest = f"/etc/pki/ca-trust/source/anchors/{TRUST_NAME}.pem"
            commands = [["install", "-D", "-m", "0644", cert, dest], ["update-ca-trust", "extract"]]
        else:
            return InstallPlan([], False, "no update-ca-certificates or update-ca-trust on this system: add "
                               f"{cert} to its trust store by hand")
        if root:
            return InstallPlan(commands, True)
        return InstallPlan([["sudo", *c] for c in commands], False, "the system trust store needs root")
    return InstallPlan([], False, f"no known way to install a CA on {system}: add {cert} by hand")
