"""The v3 token side (bulkopens._tokens, bulkopens._oauth) against the simulator's OAuth2
server over loopback: renewal near expiry and after a 401, single-flight in one process and
across processes (one file lock), rotation saved first, invalid_grant, the token endpoint's
1/s limit, the token file's rules, and no secret in any repr or message."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from simproc import SimProcess, simulator

from bulkopens._exceptions import AuthenticationError, ConfigurationError
from bulkopens._oauth import AuthServer, DeviceStart, OAuthClient, Pkce
from bulkopens._tokens import (
    StaticToken,
    TokenFile,
    TokenProvider,
    TokenSet,
    read_tokens,
    token_provider_from_options,
    write_tokens,
)
from bulkopens.simulator import SimConfig, Simulator

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"
LATER = 10**6  # seconds: a clock this far ahead finds every access token expired
CONFIG = SimConfig(contacts=5, token_rate_per_second=0, rate_per_second=0, daily_quota=0)


class Clock:
    """A hand-driven clock (the simulator's: its token limit and token expiry)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_url(url: str) -> str:
    return url + "/oauth2/default/v1/token"


def save(path: Path, answer: dict[str, Any], url: str, *, age: float = 5.0) -> TokenSet:
    """A token file holding ``answer`` (a token response), obtained ``age`` seconds ago."""
    tokens = TokenSet.from_answer(
        answer, client_id=CLIENT_ID, token_url=token_url(url), now=time.time() - age, flow="device"
    )
    write_tokens(path, tokens)
    return tokens


def ahead() -> float:
    return time.time() + LATER


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(CONFIG) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def v3_status(http: aiohttp.ClientSession, sim: Simulator, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(sim.url + "/v3/emails", headers=headers) as response:
        return response.status


async def refresh_status(http: aiohttp.ClientSession, sim: Simulator, refresh: str) -> str:
    """The token endpoint's verdict on ``refresh`` ("200" or its OAuth2 error)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": CLIENT_ID}
    async with http.post(token_url(sim.url), data=form) as response:
        body = await response.json()
        return "200" if response.status == 200 else str(body["error"])


def assert_hidden(text: str, *secrets: str | None) -> None:
    for secret in secrets:
        if secret:
            assert secret not in text


# -- renewal --------------------------------------------------------------------------------


async def test_near_expiry_renews_rotates_and_saves_before_use(
    tmp_path: Path, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "cfg" / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    provider = TokenFile(path, client_id=CLIENT_ID, clock=time.time)
    assert await provider.access_token() == first.access_token  # valid: no request
    assert sim.token_counts() == {}

    later = TokenFile(path, client_id=None, clock=ahead)  # the same file, a day later
    renewed = await later.access_token()
    assert renewed != first.access_token
    assert await later.access_token() == renewed  # once
    on_disk = read_tokens(path)
    assert on_disk is not None
    assert on_disk.access_token == renewed
    assert on_disk.refresh_token not in (None, first.refresh_token)
    assert on_disk.refresh_kind == "rotating"
    assert on_disk.refreshes == 1
    assert on_disk.flow == "device"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sim.token_counts() == {"refresh_token 200": 1}
    assert await v3_status(http, sim, renewed) == 200
    assert first.refresh_token is not None
    assert await refresh_status(http, sim, first.refresh_token) == "invalid_grant"  # spent
    # Both the old and the new tokens are scrubbed from output.
    hidden = set(later.secrets())
    assert {first.access_token, first.refresh_token, renewed, on_disk.refresh_token} <= hidden
    await later.aclose()
    await provider.aclose()


async def test_long_lived_refresh_tokens_are_named_so(tmp_path: Path) -> None:
    config = SimConfig(contacts=5, token_rate_per_second=0, refresh_tokens="long-lived")
    async with Simulator(config) as sim:
        path = tmp_path / "token.json"
        first = save(path, sim.mint_tokens(), sim.url)
        provider = TokenFile(path, client_id=CLIENT_ID, clock=ahead)
        await provider.access_token()
        on_disk = read_tokens(path)
        assert on_disk is not None
        assert (on_disk.refresh_token, on_disk.refresh_kind) == (first.refresh_token, "long-lived")
        await provider.aclose()


async def test_many_refreshed_calls_send_one_request(tmp_path: Path, sim: Simulator) -> None:
    path = tmp_path / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    provider = TokenFile(path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    rejected = await provider.access_token()
    assert rejected == first.access_token
    got = await asyncio.gather(*(provider.refreshed(rejected) for _ in range(50)))
    assert len(set(got)) == 1
    assert got[0] != rejected
    assert sim.token_counts() == {"refresh_token 200": 1}
    # A late 401 for the old token takes the new one, with no request.
    assert await provider.refreshed(rejected) == got[0]
    assert sim.token_counts() == {"refresh_token 200": 1}
    assert provider.refreshes == 1
    await provider.aclose()


async def test_a_provider_takes_what_another_renewed_with_no_request(
    tmp_path: Path, sim: Simulator
) -> None:
    """Two providers on one file (as two processes): the second finds the file renewed under
    the lock and sends nothing; its rotating refresh token is never spent twice."""
    path = tmp_path / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    one = TokenFile(path, client_id=CLIENT_ID)
    two = TokenFile(path, client_id=CLIENT_ID)
    assert await one.access_token() == await two.access_token() == first.access_token
    renewed = await one.refreshed(first.access_token)
    assert await two.refreshed(first.access_token) == renewed
    assert sim.token_counts() == {"refresh_token 200": 1}
    assert two.refreshes == 0
    await one.aclose()
    await two.aclose()


async def test_spent_refresh_token_is_invalid_grant_with_the_login_hint(
    tmp_path: Path, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    assert first.refresh_token is not None
    assert await refresh_status(http, sim, first.refresh_token) == "200"  # spent elsewhere
    provider = TokenFile(path, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with pytest.raises(AuthenticationError) as caught:
        await provider.refreshed(first.access_token)
    assert str(caught.value) == (
        "the refresh token is no longer valid (invalid_grant): run bulkopens auth login"
    )
    assert sim.token_counts()["refresh_token invalid_grant"] == 1
    await provider.aclose()


async def test_a_wrong_client_secret_is_named_never_shown(tmp_path: Path, sim: Simulator) -> None:
    path = tmp_path / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    wrong = "not-the-secret-4a7f"
    provider = TokenFile(path, client_id=CLIENT_ID, client_secret=wrong)
    with pytest.raises(AuthenticationError) as caught:
        await provider.refreshed(first.access_token)
    message = str(caught.value)
    assert "invalid_client" in message
    assert "--client-secret" in message
    assert_hidden(message, wrong, CLIENT_ID, first.access_token, first.refresh_token)
    assert_hidden(repr(provider), wrong, CLIENT_ID, first.access_token, first.refresh_token)
    assert read_tokens(path) == first  # nothing was spent or changed
    await provider.aclose()


async def test_no_refresh_token_and_no_file_say_to_log_in(tmp_path: Path, sim: Simulator) -> None:
    path = tmp_path / "token.json"
    first = save(path, sim.mint_tokens(["contact_data", "campaign_data"]), sim.url)
    assert first.refresh_token is None
    provider = TokenFile(path, client_id=CLIENT_ID, clock=ahead)
    with pytest.raises(AuthenticationError, match=r"no refresh token .*auth login"):
        await provider.access_token()
    missing = TokenFile(tmp_path / "none.json", client_id=CLIENT_ID)
    with pytest.raises(AuthenticationError, match=r"no tokens in .*: run bulkopens auth login"):
        await missing.access_token()
    other = TokenFile(path, client_id="another-client")
    with pytest.raises(AuthenticationError, match="another client id"):
        await other.access_token()
    assert sim.token_counts() == {}


async def test_the_token_endpoints_429_is_waited_out(tmp_path: Path) -> None:
    """At 1 request/s, a renewal that meets a 429 waits and is admitted on a later try."""
    clock = Clock()
    async with Simulator(SimConfig(contacts=5), clock=clock) as sim:  # token rate 1/s
        path = tmp_path / "token.json"
        first = save(path, sim.mint_tokens(), sim.url)
        async with aiohttp.ClientSession() as http:
            other = sim.mint_tokens()["refresh_token"]
            assert await refresh_status(http, sim, other) == "200"  # this second's request

        async def tick_after_the_429() -> None:
            while "rate_limited" not in sim.token_counts():
                await asyncio.sleep(0.005)
            clock.now += 1.0  # the simulator's next second

        ticker = asyncio.create_task(tick_after_the_429())
        provider = TokenFile(path, client_id=CLIENT_ID)
        renewed = await provider.refreshed(first.access_token)
        await ticker
        assert renewed != first.access_token
        counts = sim.token_counts()
        assert counts["refresh_token 200"] == 2
        assert counts["rate_limited"] >= 1
        assert "refresh_token invalid_grant" not in counts  # a 429 spends nothing
        await provider.aclose()


# -- the token file -------------------------------------------------------------------------


async def test_token_file_rules(tmp_path: Path, sim: Simulator) -> None:
    path = tmp_path / "cfg" / "token.json"
    first = save(path, sim.mint_tokens(), sim.url)
    data = json.loads(path.read_text())
    assert data["format"] == 1
    assert {"access_token", "refresh_token", "expires_at", "scope", "token_type", "client_id"} <= (
        set(data)
    )
    assert "client_secret" not in data
    assert CLIENT_SECRET not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["token.json"]  # no temporary left

    path.chmod(0o644)  # readable by others: refused, not used
    with pytest.raises(ConfigurationError, match=r"other users \(mode 0644\).*chmod 600"):
        read_tokens(path)
    path.chmod(0o600)

    target = tmp_path / "elsewhere.json"
    target.write_text("mine")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        read_tokens(link)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        write_tokens(link, first)
    assert target.read_text() == "mine"

    (tmp_path / "junk.json").write_text("{}")
    (tmp_path / "junk.json").chmod(0o600)
    with pytest.raises(ConfigurationError, match="not a bulkopens token file"):
        read_tokens(tmp_path / "junk.json")
    assert read_tokens(tmp_path / "absent.json") is None


async def test_static_token_and_options(tmp_path: Path) -> None:
    static = StaticToken("static-token-77aa")
    assert await static.access_token() == "static-token-77aa"
    with pytest.raises(AuthenticationError) as caught:
        await static.refreshed("static-token-77aa")
    assert str(caught.value).startswith(
        "the access token was refused (401) and cannot be renewed: "
    )
    assert_hidden(str(caught.value) + repr(static), "static-token-77aa")
    assert static.secrets() == ("static-token-77aa",)
    assert isinstance(static, TokenProvider)
    assert isinstance(token_provider_from_options(token="abc-token"), StaticToken)
    chosen = token_provider_from_options(
        token_file=tmp_path / "t.json", client_id="id-1", auth_url="http://127.0.0.1:9/x/"
    )
    assert isinstance(chosen, TokenFile)
    assert isinstance(chosen, TokenProvider)
    assert chosen.path == tmp_path / "t.json"
    with pytest.raises(ConfigurationError, match="--auth-url"):
        token_provider_from_options(token_file=tmp_path / "t.json", auth_url="ftp://x")
    server = AuthServer.parse("https://authz.example/oauth2/default/v1/token")
    assert str(server.device_url) == "https://authz.example/oauth2/default/v1/device/authorize"


def test_reprs_hold_no_secret() -> None:
    secret_values = ["at-secret-1111", "rt-secret-2222", "id-secret-3333", "cs-secret-4444"]
    tokens = TokenSet(
        access_token="at-secret-1111",
        client_id="id-secret-3333",
        token_url="https://authz.example/oauth2/default/v1/token",
        obtained_at=0.0,
        expires_at=10.0,
        refresh_token="rt-secret-2222",
    )
    server = AuthServer.parse("https://authz.example")
    client = OAuthClient(server, "id-secret-3333", "cs-secret-4444")
    pkce = Pkce.new()
    start = DeviceStart("dc-secret-5555", "ABCD-EFGH", "https://x/activate", None, 600, 5)
    text = " ".join(map(repr, (tokens, client, pkce, start)))
    assert_hidden(text, *secret_values, "dc-secret-5555", pkce.verifier, pkce.state)


# -- two processes ----------------------------------------------------------------------------

WORKER = """
import hashlib, os, sys, time
import anyio
from bulkopens._tokens import TokenFile

path, ready, go = sys.argv[1:4]

async def main() -> None:
    provider = TokenFile(path, client_id="demo-client")
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.002)
    token = await provider.access_token()
    await provider.aclose()
    print(hashlib.sha256(token.encode()).hexdigest(), provider.refreshes)

anyio.run(main)
"""


@pytest.fixture(scope="module")
def sim_process() -> Iterator[SimProcess]:
    with simulator("--access-token-seconds", "3600", "--contacts", "5") as running:
        yield running


def test_two_processes_renew_a_rotating_token_once(tmp_path: Path, sim_process: SimProcess) -> None:
    """Two real processes share one token file whose access token has expired: exactly one
    refresh reaches the token endpoint, the other process takes its token, and neither meets
    invalid_grant."""
    before = sim_process.stats()["token_requests"]
    minted = json.loads(sim_process._post("/_sim/tokens"))
    path = tmp_path / "token.json"
    save(path, minted, sim_process.url, age=7200)  # expired an hour ago
    go = tmp_path / "go"
    workers = []
    for n in range(2):
        ready = tmp_path / f"ready-{n}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        workers.append((proc, ready))
    deadline = time.monotonic() + 60
    while not all(ready.exists() for _, ready in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    answers = []
    for proc, _ in workers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        answers.append(out.split())
    on_disk = read_tokens(path)
    assert on_disk is not None
    digest = hashlib.sha256(on_disk.access_token.encode()).hexdigest()
    assert [a[0] for a in answers] == [digest, digest]
    assert sorted(a[1] for a in answers) == ["0", "1"]  # one renewed, the other took it
    after = sim_process.stats()["token_requests"]
    assert after.get("refresh_token 200", 0) - before.get("refresh_token 200", 0) == 1
    assert after.get("refresh_token invalid_grant", 0) == before.get(
        "refresh_token invalid_grant", 0
    )
    assert on_disk.refresh_token != minted["refresh_token"]
