"""The one way to open the store's SQLite file (WAL for writers, read-only for views).

The store holds cached answers and what callers sent: a new one is created
readable by its owner only (0600), and SQLite gives its -wal and -shm files
the mode of the database file.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote


def create_private(path: str | Path) -> None:
    """Create `path` (and its folder) readable and writable by its owner only,
    unless it exists: an existing file keeps the mode its owner gave it."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o600)  # whatever the umask


def connect(path: str | Path, *, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    if readonly:
        # quoted: a '?', '#' or '%' in a path would otherwise change what the URI names
        conn = sqlite3.connect(f"file:{quote(str(Path(path)))}?mode=ro", uri=True, timeout=timeout,
                               check_same_thread=False)
    else:
        create_private(path)
        conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.row_factory = sqlite3.Row
    return conn
