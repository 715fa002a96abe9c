"""Scrubbing secrets out of text: the one place that knows what a secret looks like."""

from __future__ import annotations

import re

_MASK = "***"
# A query parameter or header that carries a credential, whatever its value.
_CREDENTIAL_PARAMS = re.compile(
    r"(?i)(api_key=|access_token=|authorization:\s*bearer\s+|bearer\s+)([^&\s\"',;]+)"
)


class Redactor:
    """Replaces known secrets, and anything shaped like a credential, with ``***``."""

    __slots__ = ("_secrets", "_short")

    def __init__(self, *secrets: str | None) -> None:
        given = {s for s in secrets if s}
        # Longest first, so a secret that contains another is masked whole. Very short
        # secrets are masked only as whole words, or they would eat ordinary text.
        self._secrets = sorted((s for s in given if len(s) >= 4), key=len, reverse=True)
        short = sorted((s for s in given if len(s) < 4), key=len, reverse=True)
        self._short = (
            re.compile(r"(?<![\w.-])(?:" + "|".join(map(re.escape, short)) + r")(?![\w.-])")
            if short
            else None
        )

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        if self._short is not None:
            text = self._short.sub(_MASK, text)
        return _CREDENTIAL_PARAMS.sub(lambda m: m.group(1) + _MASK, text)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"
