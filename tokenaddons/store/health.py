"""How far the event store's writer is behind, told to the readers.

A proxy whose writer died or is stuck leaves a small JSON file beside the
store (`events.db.writer-PID.json`, 0600) while the problem lasts; `report`,
`stats` and `budget` read it and say their figures miss what is still queued.
A file left by a process that no longer runs is ignored.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def status_file(store: str | Path, pid: int | None = None) -> Path:
    store = Path(store)
    return store.with_name(f"{store.name}.writer-{os.getpid() if pid is None else pid}.json")


def publish(store: str | Path, status: dict | None) -> None:
    """Write this process's writer status (None: all is well, remove it)."""
    path = status_file(store)
    if status is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**status, "pid": os.getpid(), "updated": time.time()}, f)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def problems(store: str | Path) -> list[dict]:
    """Status of every running writer of this store that is behind."""
    store = Path(store)
    found = []
    for path in sorted(store.parent.glob(f"{store.name}.writer-*.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(status, dict) and isinstance(status.get("pid"), int) and _alive(status["pid"]):
            found.append(status)
    return found


def describe(status: dict) -> str:
    """One sentence for a reader of the store."""
    since = time.strftime("%H:%M:%S", time.localtime(status.get("since") or status.get("updated") or 0))
    what = ("its writer stopped" if status.get("state") == "dead"
            else "its writer has been stuck in one batch")
    why = f" ({status['reason']})" if status.get("reason") else ""
    return (f"the event store is behind: in the proxy with pid {status.get('pid')} {what} since {since}{why}; "
            f"{status.get('queued', 0):,} events are queued and not written, so these figures miss them")


def warnings(store: str | Path) -> list[str]:
    return [describe(s) for s in problems(store)]
