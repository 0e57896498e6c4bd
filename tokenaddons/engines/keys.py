"""Provider keys the client never holds: read from the OS keychain (`keyring`)
or an environment variable, as the settings file says (`key = "keyring"` or
`key = "env:VAR"`). A key is only ever returned to the caller that sends it
upstream: never logged, never put in an error message."""
from __future__ import annotations

import os

SERVICE = "tokenaddons"


class KeyUnavailable(Exception):
    """A provider's key cannot be read; the message says why and what to do."""


def env_name(provider: str) -> str:
    return f"{provider.upper().replace('-', '_')}_API_KEY"


def _no_backend(provider: str, e: Exception) -> KeyUnavailable:
    return KeyUnavailable(
        f"no keyring backend on this machine ({e.__class__.__name__}); write key = \"env:{env_name(provider)}\" "
        f"in [providers.{provider}] and export the key in that variable instead, or install a keyring backend")


def read(provider: str, spec: str) -> str:
    """The key of `provider` as `spec` ("keyring", "env:VAR" or "none") says
    where it is ("" for none: the provider is sent no credential)."""
    if spec == "none":
        return ""
    if spec.startswith("env:"):
        name = spec[4:]
        value = os.environ.get(name)
        if not value:
            raise KeyUnavailable(f"the environment variable {name} (key of [providers.{provider}]) is not set")
        return value
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    try:
        value = keyring.get_password(SERVICE, provider)
    except NoKeyringError as e:
        raise _no_backend(provider, e) from None
    except KeyringError as e:
        raise KeyUnavailable(f"the keyring could not be read for {provider} ({e.__class__.__name__})") from None
    if not value:
        raise KeyUnavailable(f"no key for {provider} in the keyring; store one with `tokenaddons keys set {provider}`")
    return value


def store(provider: str, key: str) -> None:
    """Keep `key` in the OS keychain for `provider`."""
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    try:
        keyring.set_password(SERVICE, provider, key)
    except NoKeyringError as e:
        raise _no_backend(provider, e) from None
    except KeyringError as e:
        raise KeyUnavailable(f"the keyring refused the key for {provider} ({e.__class__.__name__})") from None


def delete(provider: str) -> bool:
    """Forget the key of `provider`; False if there was none."""
    import keyring
    from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

    try:
        keyring.delete_password(SERVICE, provider)
    except PasswordDeleteError:
        return False
    except NoKeyringError as e:
        raise _no_backend(provider, e) from None
    except KeyringError as e:
        raise KeyUnavailable(f"the keyring could not delete the key for {provider} ({e.__class__.__name__})") from None
    return True
