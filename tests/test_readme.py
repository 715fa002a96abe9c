"""Every command the README shows is run, as written (with small sizes), against a simulator.

Commands are taken from the README's ``sh`` blocks and from the help's examples, run by bash in
a directory holding the files they name (``contacts.txt``, ``campaigns.txt``, ...), with the
credentials and ``--base-url`` of a simulator in the environment and ``BULKOPENS_RATE=0`` (an
environment default, so the command line stays as written). A command that builds on an
earlier one (``--incremental``, ``status``) runs after it. ``./scripts/*`` are what CI itself
runs, and are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from simproc import SimProcess, simulator

from bulkopens.cli._parser import FETCH_EXAMPLES, TOP_EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = str(Path(sys.executable).parent)


def shown_commands() -> list[str]:
    """The ``bulkopens`` command lines of the README's sh blocks and of the help's examples."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    for examples in (FETCH_EXAMPLES, TOP_EXAMPLES):
        lines += [line.strip() for line in examples.splitlines() if line.startswith("  ")]
    commands = []
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line).strip()
        if "bulkopens " in line and not line.startswith(("#", "./scripts", "export ")):
            commands.append(re.sub(r"\s+", " ", line))
    return list(dict.fromkeys(commands))


COMMANDS = shown_commands()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    # It also takes the simulator's default credentials, which the README's example uses.
    with simulator(
        "--contacts", "60", "--seed", "5", "--rate", "0", "--daily-quota", "0",
        "--api-key", "demo-key", "--token", "demo-token",
    ) as sim:  # fmt: skip
        yield sim


def sized(command: str, sim: SimProcess) -> str:
    """The command at a test's size, pointed at the simulator where it names a URL."""
    command = command.replace("seq 1 5000", "seq 1 60").replace("--port 8080", "--port 0")
    command = command.replace("http://127.0.0.1:8080", sim.url)
    command = command.replace(
        "simulate --port 0 --contacts 5000", "simulate --port 0 --contacts 50"
    )
    return command.replace(" | bulkopens", f" | {BIN}/bulkopens")


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 15
    assert any(c.startswith("bulkopens check") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_the_readme_shows_runs_as_written(
    command: str, sim: SimProcess, tmp_path: Path
) -> None:
    campaigns = sorted({r["campaign_id"] for r in sim.truth("opens")})[:2]
    (tmp_path / "contacts.txt").write_text("".join(f"{i}\n" for i in range(1, 21)))
    (tmp_path / "campaigns.txt").write_text("".join(f"{c}\n" for c in campaigns))
    (tmp_path / "export.csv").write_text(
        "contact_id,email\n" + "".join(f"{i},c{i}@example.com\n" for i in range(1, 21))
    )
    (tmp_path / "ids.csv").write_text("".join(f"{i},x\n" for i in range(1, 21)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTCT_", "BULKOPENS_"))}
    env.update(sim.env(), BULKOPENS_RATE="0", PATH=f"{BIN}:{env.get('PATH', '')}")
    command = sized(command, sim)
    if command.startswith("bulkopens simulate"):
        proc = subprocess.Popen(
            ["bash", "-c", command], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert "serving http://127.0.0.1:" in proc.stdout.readline()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        return
    if "--incremental" in command or command.startswith("bulkopens status"):
        before = command.replace(" --incremental", "")
        if command.startswith("bulkopens status"):
            out = command.split()[2]
            before = f"bulkopens fetch --contacts contacts.txt --out {out}"
        first = run(before, tmp_path, env)
        assert first.returncode in (0, 1), first.stderr
    done = run(command, tmp_path, env)
    assert done.returncode in (0, 1), f"{command}\n{done.stderr}"
    assert "Traceback" not in done.stderr
