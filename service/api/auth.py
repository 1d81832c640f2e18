"""API keys: `Authorization: Bearer KEY`, or HTTP Basic auth with the key as the password (what a
client sends for a key in its URL, `http://user:KEY@host`, as OpenRLHF's is configured), checked
in constant time, for HTTP and gRPC alike. A presented key is never logged.

Key configuration fails closed: a key source that is set but holds no usable key is an error,
never "no authentication".
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
from pathlib import Path

UNAUTHORIZED_MESSAGE = "missing or invalid API key: send the header `Authorization: Bearer <key>`"
# Visible ASCII only: what an HTTP header and gRPC metadata carry unchanged. A key with a space
# would also be a sign of a misread line ("key # comment").
_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")
MIN_KEY_CHARS = 16


class ApiKeyConfigError(ValueError):
    """API keys configured in a way that would weaken authentication (a ValueError, so that
    pydantic reports it as a settings error)."""


def check_key(key: str, where: str) -> str:
    """`key`, or an error naming `where` it came from (never the key itself: it is a secret)."""
    if not _KEY_PATTERN.fullmatch(key):
        raise ApiKeyConfigError(
            f"{where}: an API key must be visible ASCII characters, without spaces or control "
            "characters (comments go on their own line, starting with #)"
        )
    if key.startswith("#"):
        # "#key" is how one comments a key out; taking it as a key would keep a key meant to be off.
        raise ApiKeyConfigError(f"{where}: an API key cannot start with # (a comment in a keys file)")
    return key


def short_keys(keys: list[str]) -> list[int]:
    """Numbers (from 1) of the keys shorter than MIN_KEY_CHARS: guessable, worth a warning."""
    return [number for number, key in enumerate(keys, 1) if len(key) < MIN_KEY_CHARS]


def split_keys(value: str) -> list[str]:
    """RMSERVE_API_KEYS: comma-separated keys, blanks around them ignored."""
    entries = [entry.strip() for entry in value.split(",")]
    return [entry for entry in entries if entry]


def keys_from_env(keys: list[str]) -> list[str]:
    """The keys of RMSERVE_API_KEYS, which is set: at least one, each well-formed."""
    if not keys:
        raise ApiKeyConfigError(
            "RMSERVE_API_KEYS is set but holds no key (only commas or blanks): set at least one "
            "key, or unset it to run without authentication"
        )
    return [check_key(key, f"RMSERVE_API_KEYS, key {number}") for number, key in enumerate(keys, 1)]


def keys_from_file(path: Path) -> list[str]:
    """One key per line; blank lines and lines starting with # (after any indentation) are
    skipped. A file that holds no key is an error."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: an editor's byte order mark is no key
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiKeyConfigError(f"--api-keys-file {path}: cannot read it: {exc}") from exc
    keys = [
        check_key(entry, f"--api-keys-file {path}, line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if (entry := line.strip()) and not entry.startswith("#")
    ]
    if not keys:
        raise ApiKeyConfigError(
            f"--api-keys-file {path} holds no key (only blank lines and # comments): add one key "
            "per line, or drop the option to run without authentication"
        )
    return keys


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name (or "", all interfaces): assume reachable from outside
        return False


class ApiKeys:
    """The configured keys, and whether a request's Authorization header carries one of them.
    No keys means authentication is off (the caller warns about that where it matters)."""

    def __init__(self, keys: list[str]) -> None:
        # An empty key would let in `Authorization: Bearer ` with nothing after it.
        self._keys = [check_key(key, f"API key {number}").encode() for number, key in enumerate(keys, 1)]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def allows(self, authorization: str | None) -> bool:
        """Whether the Authorization header carries a known key, as a Bearer token or as the
        password of Basic credentials. Every key is compared, each in constant time, so the
        answer's timing says nothing about which key came close."""
        if not self._keys:
            return True
        presented = presented_key(authorization)
        matched = False
        for key in self._keys:
            # An unusable header is compared too (as b""), so it costs what a wrong key costs.
            matched |= hmac.compare_digest(presented or b"", key)
        return matched and presented is not None


def presented_key(authorization: str | None) -> bytes | None:
    """The key an Authorization header presents: a Bearer token, or the password of Basic
    credentials (the user name, when the password is empty: `http://KEY@host`). None for any
    other scheme or a malformed header."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer":
        return token.encode()
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    if not separator:
        return None
    return (password or user).encode()
