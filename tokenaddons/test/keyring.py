"""Keyring backends for tests: in memory, or in a JSON file named by
TOKENADDONS_TEST_KEYRING (for a mitmdump subprocess: `PYTHON_KEYRING_BACKEND=
tokenaddons.test.keyring.FileKeyring`). Never for real keys."""
from __future__ import annotations

import json
import os
from pathlib import Path

from jaraco.classes.properties import classproperty
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

ENV = "TOKENADDONS_TEST_KEYRING"


class MemoryKeyring(KeyringBackend):
    """Set explicitly (`keyring.set_keyring(MemoryKeyring())`); never chosen on its own."""

    @classproperty
    def priority(cls) -> float:
        raise RuntimeError("a test keyring: set it explicitly")

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.items.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


class FileKeyring(MemoryKeyring):
    """The in-memory keyring, kept in the file TOKENADDONS_TEST_KEYRING (only
    usable where that variable is set, by name: PYTHON_KEYRING_BACKEND)."""

    @classproperty
    def priority(cls) -> float:
        if not os.environ.get(ENV):
            raise RuntimeError(f"a test keyring: {ENV} is not set")
        return 1.0

    def __init__(self) -> None:
        super().__init__()
        self.path = Path(os.environ[ENV])

    def _load(self) -> None:
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.items = {tuple(k.split("\n", 1)): v for k, v in data.items()}

    def _save(self) -> None:
        self.path.write_text(json.dumps({"\n".join(k): v for k, v in self.items.items()}))

    def get_password(self, service: str, username: str) -> str | None:
        self._load()
        return super().get_password(service, username)

    def set_password(self, service: str, username: str, password: str) -> None:
        self._load()
        super().set_password(service, username, password)
        self._save()

    def delete_password(self, service: str, username: str) -> None:
        self._load()
        super().delete_password(service, username)
        self._save()
