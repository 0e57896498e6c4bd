"""Several headers read in one pass over a message's fields.

mitmproxy's `headers.get(name)` walks every header (comparing names in lower
case) each time it is called; a hook that reads five names on every request
pays five walks. `Names.read` pays one."""
from __future__ import annotations

from mitmproxy.http import Headers


class Names:
    def __init__(self, *names: str):
        self._wanted = {n.lower().encode("ascii"): n.lower() for n in names}

    def read(self, headers: Headers) -> dict[str, list[str]]:
        """name -> its values in order, for each of the names present (decoded as mitmproxy decodes them)."""
        wanted = self._wanted
        out: dict[str, list[str]] = {}
        for key, value in headers.fields:
            name = wanted.get(key.lower())
            if name is not None:
                out.setdefault(name, []).append(value.decode("utf-8", "surrogateescape"))
        return out
