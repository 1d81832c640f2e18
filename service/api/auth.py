"""API keys: `Authorization: Bearer KEY`, checked in constant time, for HTTP and gRPC alike."""

from __future__ import annotations

import hmac

UNAUTHORIZED_MESSAGE = "missing or invalid API key: send the header `Authorization: Bearer <key>`"


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def allows(self, authorization: str | None) -> bool:
        """Whether the Authorization header carries a known key. Every key is compared, each in
        constant time, so the answer's timing says nothing about which key came close."""
        if not self._keys:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        presented = token.strip().encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        return matched and scheme.lower() == "bearer"
