"""``bulkopens auth login``, ``auth status`` and ``auth logout``: the real command in a
subprocess against the simulator's OAuth2 server (a process of its own) over loopback.

The device flow (the test approves the user code through ``/_sim/approve``), the
authorization-code flow with PKCE (the test plays the browser: it opens the printed URL, which
redirects to the command's loopback server), the exit codes, and no secret in any output."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simproc import SimProcess, bulkopens, simulator

from bulkopens._tokens import TokenSet, read_tokens, write_tokens

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with simulator("--device-interval", "1", "--contacts", "5", "--token-rate", "0") as running:
        yield running


@pytest.fixture(scope="module")
def sim_no_device_refresh() -> Iterator[SimProcess]:
    with simulator("--device-interval", "1", "--contacts", "5", "--no-device-refresh") as running:
        yield running


def auth_env(sim: SimProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``auth`` command: this simulator, a config dir in ``tmp_path``,
    no credential of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTCT_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        CTCT_CLIENT_ID=CLIENT_ID,
        CTCT_AUTH_URL=sim.url + "/oauth2/default/v1",
    )
    env.update(extra)
    return env


def default_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "bulkopens" / "token.json"


def start_login(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulkopens", "auth", "login", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], pattern: str) -> tuple[re.Match[str], list[str]]:
    """Read the command's stderr line by line until ``pattern`` matches (and the lines read)."""
    assert proc.stderr is not None
    lines: list[str] = []
    while True:
        line = proc.stderr.readline()
        assert line, f"the command ended before {pattern!r}: {lines}"
        lines.append(line)
        found = re.search(pattern, line)
        if found:
            return found, lines


def finish(proc: subprocess.Popen[str], lines: list[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(lines) + err


def device_login(
    sim: SimProcess, env: dict[str, str], *args: str, approve: bool = True
) -> tuple[int, str, str]:
    proc = start_login(env, *args)
    found, lines = read_until(proc, r"enter the code ([A-Z]{4}-[A-Z]{4})")
    sim._post(f"/_sim/{'approve' if approve else 'deny'}?user_code={found.group(1)}")
    return finish(proc, lines)


def assert_no_secrets(path: Path, *texts: str, more: tuple[str, ...] = ()) -> None:
    """Neither the tokens in ``path`` nor the client secret (nor ``more``) in ``texts``."""
    tokens = read_tokens(path)
    assert tokens is not None
    for secret in (*tokens.secrets(), CLIENT_SECRET, *more):
        for text in texts:
            assert secret not in text


def save(sim: SimProcess, path: Path, answer: dict[str, Any], *, age: float = 0.0) -> None:
    """A token file at ``path`` holding ``answer``, obtained ``age`` seconds ago."""
    url = sim.url + "/oauth2/default/v1/token"
    now = time.time() - age
    write_tokens(
        path,
        TokenSet.from_answer(answer, client_id=CLIENT_ID, token_url=url, now=now, flow="device"),
    )


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return bulkopens("auth", "status", *args, env=env)


# -- the device flow --------------------------------------------------------------------------


def test_device_login_saves_the_tokens_and_status_shows_them(
    sim: SimProcess, tmp_path: Path
) -> None:
    env = auth_env(sim, tmp_path)
    code, out, err = device_login(sim, env)
    assert code == 0, err
    path = default_file(tmp_path)
    assert f"tokens are saved in {path}" in out
    assert "open " + sim.url + "/activate" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    tokens = read_tokens(path)
    assert tokens is not None
    assert tokens.client_id == CLIENT_ID
    assert tokens.refresh_token is not None  # the simulator's device flow issues one by default
    assert tokens.flow == "device"
    assert tokens.scope.split() == ["campaign_data", "contact_data", "offline_access"]
    assert tokens.expires_at is not None
    assert 86_000 < tokens.expires_at - time.time() <= 86_400

    shown = status(env)
    assert shown.returncode == 0, shown.stderr
    assert "scopes:         campaign_data contact_data offline_access" in shown.stdout
    assert re.search(r"access token: +valid until \S+ \S+ UTC \(in 2[34] h\)", shown.stdout)
    assert "refresh token:  held" in shown.stdout
    assert "client id:      de…(11 characters)" in shown.stdout
    as_json = json.loads(status(env, "--json").stdout)
    assert as_json["usable"] is True
    assert as_json["refresh_token"] is True
    assert as_json["scopes"] == ["campaign_data", "contact_data", "offline_access"]
    assert_no_secrets(path, out, err, shown.stdout, shown.stderr, more=(CLIENT_ID,))
    counts = sim.stats()["token_requests"]
    assert counts["urn:ietf:params:oauth:grant-type:device_code 200"] >= 1


def test_device_flow_without_a_refresh_token_warns(
    sim_no_device_refresh: SimProcess, tmp_path: Path
) -> None:
    env = auth_env(sim_no_device_refresh, tmp_path)
    code, _, err = device_login(sim_no_device_refresh, env)
    assert code == 0, err
    assert "issued no refresh token" in err
    assert "try --flow pkce" in err
    tokens = read_tokens(default_file(tmp_path))
    assert tokens is not None
    assert tokens.refresh_token is None
    shown = status(env)
    assert shown.returncode == 0  # still valid for a day
    assert "refresh token:  none" in shown.stdout


def test_a_denied_login_exits_3(sim: SimProcess, tmp_path: Path) -> None:
    env = auth_env(sim, tmp_path)
    code, _, err = device_login(sim, env, approve=False)
    assert code == 3
    assert err.strip().splitlines()[-1] == (
        "bulkopens: error: the login was denied at the authorization server (access_denied)"
    )
    assert not default_file(tmp_path).exists()


# -- PKCE -------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, CLIENT_SECRET], ids=["public", "confidential"])
def test_pkce_login(sim: SimProcess, tmp_path: Path, secret: str | None) -> None:
    env = auth_env(sim, tmp_path, **({"CTCT_CLIENT_SECRET": secret} if secret else {}))
    proc = start_login(env, "--flow", "pkce", "--no-browser")
    found, lines = read_until(proc, r"^(http://\S+/authorize\?\S+)$")
    # The test is the browser: the simulator's /authorize redirects back to the command.
    with urllib.request.urlopen(found.group(1), timeout=30) as page:
        assert page.status == 200
        assert b"logged in" in page.read()
    code, out, err = finish(proc, lines)
    assert code == 0, err
    tokens = read_tokens(default_file(tmp_path))
    assert tokens is not None
    assert tokens.refresh_token is not None
    assert tokens.flow == "pkce"
    assert "code_challenge_method=S256" in found.group(1)
    # The client id is in the authorize URL by necessity; nowhere else.
    outside_the_url = err.replace(found.group(1), "")
    assert_no_secrets(default_file(tmp_path), out, outside_the_url, more=(CLIENT_ID,))
    assert sim.stats()["token_requests"]["authorization_code 200"] >= 1


def test_pkce_ignores_a_redirect_with_another_state(sim: SimProcess, tmp_path: Path) -> None:
    env = auth_env(sim, tmp_path)
    proc = start_login(env, "--flow", "pkce", "--no-browser")
    found, lines = read_until(proc, r"^(http://\S+/authorize\?\S+)$")
    waiting, more = read_until(proc, r"come back to (http://127\.0\.0\.1:\d+/callback)")
    forged = waiting.group(1) + "?code=forged&state=not-the-state"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(forged, timeout=30)
    assert caught.value.code == 400
    caught.value.close()
    with urllib.request.urlopen(found.group(1), timeout=30) as page:
        assert page.status == 200
    code, _, err = finish(proc, lines + more)
    assert code == 0, err


# -- status, --check, logout, bad input -------------------------------------------------------


def test_status_exit_codes_and_check(sim: SimProcess, tmp_path: Path) -> None:
    env = auth_env(sim, tmp_path)
    none = status(env)
    assert none.returncode == 3
    assert none.stderr.strip() == (
        f"bulkopens: error: no tokens in {default_file(tmp_path)}: run bulkopens auth login"
    )
    minted = json.loads(sim._post("/_sim/tokens"))
    path = default_file(tmp_path)
    save(sim, path, minted, age=90_000)
    shown = status(env)
    assert shown.returncode == 0  # expired, but the refresh token renews it
    assert re.search(r"access token: +expired at .* \(60 min ago\)", shown.stdout)
    checked = status(env, "--check")
    assert checked.returncode == 0, checked.stderr
    assert "renewed the access token" in checked.stderr
    assert re.search(r"access token: +valid until .* \(in 2[34] h\)", checked.stdout)
    assert "held (rotating: each renewal brings a new one)" in checked.stdout
    renewed = read_tokens(path)
    assert renewed is not None
    assert renewed.refreshes == 1
    assert_no_secrets(path, checked.stdout, checked.stderr, more=(minted["refresh_token"],))

    save(sim, path, {k: v for k, v in minted.items() if k != "refresh_token"}, age=90_000)
    dead = status(env)
    assert dead.returncode == 3
    assert dead.stderr.strip().endswith("no refresh token is held: run bulkopens auth login")

    path.chmod(0o640)
    loose = status(env)
    assert loose.returncode == 2
    assert "chmod 600" in loose.stderr


def test_an_invalid_grant_on_check_says_to_log_in(sim: SimProcess, tmp_path: Path) -> None:
    env = auth_env(sim, tmp_path)
    minted = json.loads(sim._post("/_sim/tokens"))
    path = default_file(tmp_path)
    save(sim, path, minted, age=90_000)
    assert status(env, "--check").returncode == 0  # spends the saved refresh token ...
    save(sim, path, minted, age=90_000)  # ... which a stale copy of the file still holds
    result = status(env, "--check")
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "bulkopens: error: the refresh token is no longer valid (invalid_grant): run bulkopens "
        "auth login"
    )


def test_logout_deletes_only_its_file(sim: SimProcess, tmp_path: Path) -> None:
    env = auth_env(sim, tmp_path)
    path = default_file(tmp_path)
    minted = json.loads(sim._post("/_sim/tokens"))
    save(sim, path, minted)
    out = bulkopens("auth", "logout", env=env)
    assert out.returncode == 0, out.stderr
    assert "logged out" in out.stdout
    assert not path.exists()
    again = bulkopens("auth", "logout", env=env)
    assert (again.returncode, "nothing to do" in again.stdout) == (0, True)
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}')
    other.chmod(0o600)
    refused = bulkopens("auth", "logout", "--token-file", str(other), env=env)
    assert refused.returncode == 2
    assert "not a bulkopens token file" in refused.stderr
    assert other.exists()


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        ((), {"CTCT_CLIENT_ID": ""}, "a client id is required (--client-id or CTCT_CLIENT_ID)"),
        (("--auth-url", "ftp://x"), {}, "--auth-url must be an http:// or https:// URL"),
        (("--scope", " "), {}, "--scope must be scope names separated by spaces"),
        (("--flow", "magic"), {}, "argument --flow: invalid choice: 'magic'"),
        (("--redirect-port", "70000"), {}, "must be a whole number between 0 and 65535"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sim: SimProcess, tmp_path: Path, args: tuple[str, ...], env_extra: dict[str, str], message: str
) -> None:
    result = bulkopens("auth", "login", *args, env=auth_env(sim, tmp_path, **env_extra))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_a_wrong_client_secret_exits_3_and_is_never_shown(sim: SimProcess, tmp_path: Path) -> None:
    wrong = "wrong-secret-91b3"
    env = auth_env(sim, tmp_path, CTCT_CLIENT_SECRET=wrong)
    proc = start_login(env, "--flow", "pkce", "--no-browser")
    found, lines = read_until(proc, r"^(http://\S+/authorize\?\S+)$")
    with urllib.request.urlopen(found.group(1), timeout=30):
        pass
    code, out, err = finish(proc, lines)
    assert code == 3
    assert "(invalid_client): check --client-id and --client-secret" in err
    assert wrong not in out + err
    assert not default_file(tmp_path).exists()


def test_auth_help_needs_no_credentials(sim: SimProcess, tmp_path: Path) -> None:
    env = auth_env(sim, tmp_path, CTCT_CLIENT_SECRET="help-secret-0f0f")
    for action in ("login", "status", "logout"):
        result = bulkopens("auth", action, "--help", env=env)
        assert result.returncode == 0, result.stderr
        assert "help-secret-0f0f" not in result.stdout
    assert "--flow" in bulkopens("auth", "login", "--help", env=env).stdout
