"""The simulated OAuth2 authorization server of the v3 face (docs/simulator-v3.md).

It models Constant Contact's authz service (an Okta authorization server: paths
``/oauth2/default/v1/...``), served at the simulator's own origin:

* ``GET  /oauth2/default/v1/authorize`` -- the authorization-code flow, with PKCE (S256). The
  user is taken to have logged in and consented: it redirects (302) straight back to
  ``redirect_uri`` with ``code`` and ``state``;
* ``POST /oauth2/default/v1/device/authorize`` -- starts the device flow; an admin call
  (``POST /_sim/approve?user_code=...``) stands for the user approving it;
* ``POST /oauth2/default/v1/token`` -- grant types ``refresh_token``, ``authorization_code``
  and ``urn:ietf:params:oauth:grant-type:device_code``. The client authenticates with HTTP
  Basic (confidential client) or sends only ``client_id`` in the form (public client: the
  PKCE and device flows). At most ``token_rate_per_second`` requests per client id are
  admitted (429, Okta's ``E0000047`` body); every answer is counted in :attr:`OAuth.counts`.

Access tokens live ``access_token_seconds`` on the simulator clock. A refresh token is issued
when the grant's scopes include ``offline_access`` (the device flow only when
``device_refresh``); rotating ones are single use (a second use is ``invalid_grant``),
long-lived ones come back unchanged; either dies after ``refresh_idle_seconds`` unused.
Tokens are random and never appear in any log, repr or error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._limits import KeyLimits

SCOPES = frozenset(
    {"account_read", "account_update", "contact_data", "campaign_data", "offline_access"}
)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CODE_SECONDS = 300.0
DEVICE_SECONDS = 600
_USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
_RATE_LIMITED = {
    "errorCode": "E0000047",
    "errorSummary": "API call exceeded rate limit due to too many requests.",
    "errorLink": "E0000047",
    "errorCauses": [],
}


@dataclass(slots=True)
class AccessGrant:
    """What an access token stands for; ``expires_at`` None = never (configured tokens)."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float | None


@dataclass(slots=True)
class _RefreshGrant:
    client_id: str
    scopes: frozenset[str]
    last_used: float
    spent: bool = False


@dataclass(slots=True)
class _CodeGrant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    scopes: frozenset[str]
    expires_at: float


@dataclass(slots=True)
class _DeviceGrant:
    client_id: str
    user_code: str
    scopes: frozenset[str]
    expires_at: float
    state: str = "pending"  # pending, approved or denied


@dataclass(slots=True)
class TokenAnswer:
    """One answer of an OAuth2 endpoint: status, JSON payload, extra headers."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class OAuthError(Exception):
    """An OAuth2 error answer (RFC 6749 §5.2 body)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(status, error, description)
        self.answer = TokenAnswer(status, {"error": error, "error_description": description})


class OAuth:
    """Every token, code and device grant of one simulator, on its clock."""

    __slots__ = (
        "_access",
        "_clock",
        "_codes",
        "_config",
        "_devices",
        "_limits",
        "_refresh",
        "_user_codes",
        "counts",
    )

    def __init__(self, config: SimConfig, *, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._limits = KeyLimits(config.token_rate_per_second, 0, clock=clock)
        every = frozenset(SCOPES)
        self._access: dict[str, AccessGrant] = {
            token: AccessGrant(config.client_id, every, None) for token in config.tokens
        }
        self._refresh: dict[str, _RefreshGrant] = {}
        self._codes: dict[str, _CodeGrant] = {}
        self._devices: dict[str, _DeviceGrant] = {}
        self._user_codes: dict[str, str] = {}
        #: token-endpoint answers: "grant_type status" -> count (429s under "rate_limited").
        self.counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<OAuth access={len(self._access)} refresh={len(self._refresh)} {self.counts}>"

    # -- resource-server side ---------------------------------------------------------------

    def check(self, header: str | None) -> AccessGrant | None:
        """The grant behind an ``Authorization: Bearer`` header, or None (missing, unknown or
        expired: all answer 401)."""
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        grant = self._access.get(token.strip())
        if grant is None:
            return None
        if grant.expires_at is not None and self._clock() >= grant.expires_at:
            return None
        return grant

    # -- issuing ----------------------------------------------------------------------------

    def mint(
        self,
        scopes: frozenset[str],
        *,
        refresh: bool = True,
        expires_in: float | None = None,
    ) -> dict[str, Any]:
        """A fresh token response for the configured client, without any flow (admin)."""
        return self._issue(self._config.client_id, scopes, refresh=refresh, expires_in=expires_in)

    def _issue(
        self,
        client_id: str,
        scopes: frozenset[str],
        *,
        refresh: bool,
        expires_in: float | None = None,
        refresh_token: str | None = None,
    ) -> dict[str, Any]:
        now = self._clock()
        lifetime = self._config.access_token_seconds if expires_in is None else expires_in
        access = "sim3at_" + secrets.token_urlsafe(32)
        self._access[access] = AccessGrant(client_id, scopes, now + lifetime)
        payload: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": int(lifetime),
            "access_token": access,
            "scope": " ".join(sorted(scopes)),
        }
        if refresh and "offline_access" in scopes:
            if refresh_token is None:
                refresh_token = "sim3rt_" + secrets.token_urlsafe(32)
            self._refresh[refresh_token] = _RefreshGrant(client_id, scopes, now)
            payload["refresh_token"] = refresh_token
        return payload

    # -- endpoints --------------------------------------------------------------------------

    def authorize(self, query: Mapping[str, str]) -> TokenAnswer:
        """GET /authorize: a 302 back to redirect_uri (with code or error), or a 400 when
        there is no valid client or redirect_uri to send the user back to."""
        if query.get("client_id") != self._config.client_id:
            return OAuthError(400, "invalid_client", "The client_id is not known.").answer
        redirect_uri = query.get("redirect_uri", "")
        target = URL(redirect_uri)
        if not target.is_absolute():
            return OAuthError(400, "invalid_request", "The redirect_uri is not valid.").answer
        state = {"state": query["state"]} if "state" in query else {}
        try:
            if query.get("response_type") != "code":
                raise OAuthError(400, "unsupported_response_type", "Only code is supported.")
            scopes = _scopes(query.get("scope"))
            challenge = query.get("code_challenge")
            method = query.get("code_challenge_method", "plain" if challenge else None)
            if challenge is not None and method != "S256":
                raise OAuthError(400, "invalid_request", "Only S256 code challenges are allowed.")
        except OAuthError as exc:
            error = {"error": exc.answer.payload["error"]}
            return TokenAnswer(302, {}, {"Location": str(target.update_query(error | state))})
        code = secrets.token_urlsafe(24)
        self._codes[code] = _CodeGrant(
            self._config.client_id,
            redirect_uri,
            challenge,
            scopes,
            self._clock() + CODE_SECONDS,
        )
        location = target.update_query({"code": code} | state)
        return TokenAnswer(302, {}, {"Location": str(location)})

    def device_authorize(self, form: Mapping[str, str], origin: str) -> TokenAnswer:
        """POST /device/authorize: a device code and the user code to approve."""
        try:
            if form.get("client_id") != self._config.client_id:
                raise OAuthError(401, "invalid_client", "The client_id is not known.")
            scopes = _scopes(form.get("scope"))
        except OAuthError as exc:
            return exc.answer
        device_code = secrets.token_urlsafe(32)
        user_code = "".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(8))
        user_code = f"{user_code[:4]}-{user_code[4:]}"
        self._devices[device_code] = _DeviceGrant(
            self._config.client_id, user_code, scopes, self._clock() + DEVICE_SECONDS
        )
        self._user_codes[user_code] = device_code
        verification = f"{origin}/activate"
        return TokenAnswer(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification,
                "verification_uri_complete": f"{verification}?user_code={user_code}",
                "expires_in": DEVICE_SECONDS,
                "interval": self._config.device_interval,
            },
        )

    def decide_device(self, user_code: str, *, approve: bool) -> bool:
        """The user approves (or denies) a pending device code; False if there is none."""
        device = self._devices.get(self._user_codes.get(user_code, ""))
        if device is None or device.state != "pending":
            return False
        device.state = "approved" if approve else "denied"
        return True

    def token(self, authorization: str | None, form: Mapping[str, str]) -> TokenAnswer:
        """POST /token: the token response, or the OAuth2 error answer."""
        basic = _basic(authorization)
        key = basic[0] if basic is not None else form.get("client_id", "")
        grant_type = form.get("grant_type", "")
        if self._limits.admit(key or "?") is not None:
            self._count("rate_limited")
            return TokenAnswer(429, dict(_RATE_LIMITED))
        try:
            client_id, confidential = self._client(basic, form)
            if grant_type == "refresh_token":
                payload = self._refresh_grant(client_id, form)
            elif grant_type == "authorization_code":
                payload = self._code_grant(client_id, confidential, form)
            elif grant_type == DEVICE_GRANT:
                payload = self._device_grant(client_id, form)
            else:
                raise OAuthError(400, "unsupported_grant_type", "The grant_type is not supported.")
        except OAuthError as exc:
            self._count(f"{grant_type or '-'} {exc.answer.payload['error']}")
            return exc.answer
        self._count(f"{grant_type} 200")
        return TokenAnswer(200, payload, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- grants -----------------------------------------------------------------------------

    def _client(self, basic: tuple[str, str] | None, form: Mapping[str, str]) -> tuple[str, bool]:
        config = self._config
        if basic is not None:
            user, secret = basic
            if user == config.client_id and hmac.compare_digest(
                secret.encode(), config.client_secret.encode()
            ):
                return user, True
            raise OAuthError(401, "invalid_client", "Client authentication failed.")
        if form.get("client_id") == config.client_id:
            return config.client_id, False
        raise OAuthError(401, "invalid_client", "Client authentication failed.")

    def _refresh_grant(self, client_id: str, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        grant = self._refresh.get(token)
        now = self._clock()
        if (
            grant is None
            or grant.spent
            or grant.client_id != client_id
            or now - grant.last_used >= self._config.refresh_idle_seconds
        ):
            raise OAuthError(400, "invalid_grant", "The refresh token is invalid or expired.")
        if self._config.refresh_tokens == "rotating":
            grant.spent = True
            return self._issue(client_id, grant.scopes, refresh=True)
        grant.last_used = now
        return self._issue(client_id, grant.scopes, refresh=True, refresh_token=token)

    def _code_grant(
        self, client_id: str, confidential: bool, form: Mapping[str, str]
    ) -> dict[str, Any]:
        grant = self._codes.pop(form.get("code", ""), None)  # a code is single use
        if (
            grant is None
            or grant.client_id != client_id
            or self._clock() >= grant.expires_at
            or form.get("redirect_uri") != grant.redirect_uri
        ):
            raise OAuthError(400, "invalid_grant", "The authorization code is invalid or expired.")
        verifier = form.get("code_verifier")
        if grant.challenge is not None:
            if verifier is None or not hmac.compare_digest(_s256(verifier), grant.challenge):
                raise OAuthError(400, "invalid_grant", "PKCE verification failed.")
        elif not confidential:
            raise OAuthError(401, "invalid_client", "Client authentication failed.")
        return self._issue(client_id, grant.scopes, refresh=True)

    def _device_grant(self, client_id: str, form: Mapping[str, str]) -> dict[str, Any]:
        device_code = form.get("device_code", "")
        device = self._devices.get(device_code)
        if device is None or device.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "The device code is invalid.")
        if self._clock() >= device.expires_at:
            raise OAuthError(400, "expired_token", "The device code has expired.")
        if device.state == "denied":
            raise OAuthError(400, "access_denied", "The user denied the request.")
        if device.state == "pending":
            raise OAuthError(400, "authorization_pending", "The device authorization is pending.")
        del self._devices[device_code]
        self._user_codes.pop(device.user_code, None)
        return self._issue(client_id, device.scopes, refresh=self._config.device_refresh)

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


def _scopes(raw: str | None) -> frozenset[str]:
    scopes = frozenset((raw or "").split())
    if not scopes or not scopes <= SCOPES:
        raise OAuthError(400, "invalid_scope", "The requested scope is invalid or missing.")
    return scopes


def _basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic header; None when there is none; ("", "") when it
    is malformed (which then fails client authentication)."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, colon, password = text.partition(":")
    return (user, password) if colon else ("", "")


def _s256(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
