"""Scrubbing secrets out of text, and terminal controls out of what the server said: the one
place that knows what a secret and a control sequence look like."""

from __future__ import annotations

import re

_MASK = "***"
# ECMA-48 control sequences, whole: a control string (OSC, DCS, SOS, PM, APC: the OSC 52
# clipboard write, a window title) up to its BEL or ST terminator or the end of the text; a CSI
# sequence (colours, cursor moves, ESC[2J); any other escape with its one following character.
_SEQUENCES = re.compile(
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -~]?"
)
# What is left that a terminal or a log reader acts on: C0 (CR and LF included), DEL, C1, the
# Unicode line and paragraph separators, and the bidirectional overrides that reorder text.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]+")
_SPACES = re.compile(r"\s+")


def printable(text: str) -> str:
    """``text`` as one line that is safe on a terminal: control sequences removed whole, other
    control characters (CR, LF, ESC, C1, bidi overrides) as spaces, runs of spaces as one."""
    text = _CONTROLS.sub(" ", _SEQUENCES.sub("", text))
    return _SPACES.sub(" ", text).strip()


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

    def add(self, *secrets: str | None) -> None:
        """Mask these too from now on (a renewed access token, a rotated refresh token)."""
        new = [s for s in secrets if s and len(s) >= 4 and s not in self._secrets]
        if new:
            self._secrets = sorted([*self._secrets, *new], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        if self._short is not None:
            text = self._short.sub(_MASK, text)
        return _CREDENTIAL_PARAMS.sub(lambda m: m.group(1) + _MASK, text)

    def server_text(self, text: str, limit: int = 200) -> str:
        """Text the server sent (an ``error_message``, an ``error_key``), fit for a message,
        a log line or a file: made :func:`printable`, then redacted, at most ``limit`` long."""
        text = self(printable(text))
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"
