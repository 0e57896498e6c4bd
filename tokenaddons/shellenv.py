"""The environment that puts a shell's tools behind the proxy (`tokenaddons env`).

Every common client reads one of these: the proxy from `HTTPS_PROXY` (curl reads
only the lowercase `http_proxy`, so both cases are set), the CA from
`NODE_EXTRA_CA_CERTS` (Node: Claude Code; added to Node's own roots),
`CODEX_CA_CERTIFICATE` (Codex; added to its roots), and `SSL_CERT_FILE` /
`REQUESTS_CA_BUNDLE` (Python's ssl, httpx, requests; these replace the trust
store, hence the combined bundle). Loopback is never proxied.
"""
from __future__ import annotations

import os
import shlex

from tokenaddons.ca import CA

LOOPBACK = ("localhost", "127.0.0.1", "::1")
SHELLS = ("sh", "fish", "powershell")


def variables(proxy_url: str | None, ca: CA, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Name -> value; `NO_PROXY` keeps what the shell already excludes. Without
    a proxy URL (transparent mode: traffic is redirected, not sent to a proxy),
    only the CA's variables."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    if proxy_url:
        out.update(proxy_variables(proxy_url, environ))
    out["NODE_EXTRA_CA_CERTS"] = str(ca.cert)
    out["CODEX_CA_CERTIFICATE"] = str(ca.cert)
    out["SSL_CERT_FILE"] = out["REQUESTS_CA_BUNDLE"] = str(ca.bundle)
    return out


def proxy_variables(proxy_url: str, environ) -> dict[str, str]:
    no_proxy: list[str] = []
    for item in [*LOOPBACK, *(environ.get("NO_PROXY") or environ.get("no_proxy") or "").split(",")]:
        if item.strip() and item.strip() not in no_proxy:
            no_proxy.append(item.strip())
    out: dict[str, str] = {}
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        out[name] = out[name.lower()] = proxy_url
    out["NO_PROXY"] = out["no_proxy"] = ",".join(no_proxy)
    return out


def render(values: dict[str, str], shell: str = "sh") -> str:
    """Lines that set `values` in `shell` (sh covers bash and zsh), quoted for it."""
    if shell == "sh":
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
    if shell == "fish":
        return "".join(f"set -gx {k} {_fish_quote(v)};\n" for k, v in values.items())
    if shell == "powershell":
        return "".join(f"$env:{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in values.items())
    raise ValueError(f"unknown shell {shell!r} (one of {', '.join(SHELLS)})")


def render_unset(names: list[str], shell: str = "sh") -> str:
    if shell == "sh":
        return f"unset {' '.join(names)}\n"
    if shell == "fish":
        return "".join(f"set -e {k};\n" for k in names)
    if shell == "powershell":
        return "".join(f"Remove-Item Env:{k} -ErrorAction SilentlyContinue\n" for k in names)
    raise ValueError(f"unknown shell {shell!r} (one of {', '.join(SHELLS)})")


def _fish_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
