"""What a running proxy tells the readers of its store about itself.

A proxy whose writer died or is stuck leaves a small JSON file beside the
store (`events.db.writer-PID.json`, 0600) while the problem lasts; `report`,
`stats` and `budget` read it and say their figures miss what is still queued.
A proxy in team mode keeps `events.db.team-PID.json` saying whether it reaches
the team's Redis. A file left by a process that no longer runs is ignored.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def status_file(store: str | Path, pid: int | None = None, kind: str = "writer") -> Path:
    store = Path(store)
    return store.with_name(f"{store.name}.{kind}-{os.getpid() if pid is None else pid}.json")


def publish(store: str | Path, status: dict | None, kind: str = "writer") -> None:
    """Write this process's status of one kind (None: nothing to say, remove it)."""
    path = status_file(store, kind=kind)
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


def statuses(store: str | Path, kind: str) -> list[dict]:
    """Status of that kind of every running proxy of this store."""
    store = Path(store)
    found = []
    for path in sorted(store.parent.glob(f"{store.name}.{kind}-*.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(status, dict) and isinstance(status.get("pid"), int) and _alive(status["pid"]):
            found.append(status)
    return found


def problems(store: str | Path) -> list[dict]:
    """Status of every running writer of this store that is behind."""
    return statuses(store, "writer")


def _clock(status: dict) -> str:
    return time.strftime("%H:%M:%S", time.localtime(status.get("since") or status.get("updated") or 0))


def describe(status: dict) -> str:
    """One sentence for a reader of the store."""
    what = ("its writer stopped" if status.get("state") == "dead"
            else "its writer has been stuck in one batch")
    why = f" ({status['reason']})" if status.get("reason") else ""
    return (f"the event store is behind: in the proxy with pid {status.get('pid')} {what} since {_clock(status)}"
            f"{why}; {status.get('queued', 0):,} events are queued and not written, so these figures miss them")


def describe_team(status: dict) -> str:
    where = status.get("redis", "Redis")
    if status.get("state") == "ok":
        return (f"team mode: the proxy with pid {status.get('pid')} shares its cache, budgets and rate limits "
                f"through {where}")
    budgets = ("lets requests under a budget through on its own spend (budget_fail_open)"
               if status.get("fail_open") else "refuses requests under a budget")
    return (f"team mode: the proxy with pid {status.get('pid')} cannot reach {where} since {_clock(status)}"
            f" ({status.get('reason')}); it serves from its own cache and rate limits and {budgets} until "
            f"Redis is back")


def warnings(store: str | Path) -> list[str]:
    return ([describe(s) for s in problems(store)]
            + [describe_team(s) for s in statuses(store, "team") if s.get("state") != "ok"])


def notes(store: str | Path) -> list[str]:
    """What all is well says: proxies of this store in team mode, reaching Redis."""
    return [describe_team(s) for s in statuses(store, "team") if s.get("state") == "ok"]
