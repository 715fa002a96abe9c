"""The package's layering, enforced: each module imports only from its own layer and below.

::

    cli ............ bulkopens.cli.*: the command line, a client of the public API
    client ......... _client: the public library API
    engine ......... _pipeline, _jobs, _campaigns: a run, its planner, its workers
    api | storage .. the API side (_wire, _aiowire, _http, _retry, _pagination, _summaries,
                     _ids, _check, _oauth, _tokens) and the output side (_state, _files,
                     _writer, _artifacts, _status): never each other
    pacing ......... _ratelimit and the budget modules: the rate a key allows
    bottom ......... errors, settings, the report table, time, redaction, counts, types, logs,
                     the work items and NDJSON lines, disk rules: nothing above them

Imports inside ``if TYPE_CHECKING:`` blocks are annotations, not dependencies, and are left out.
Imports inside functions (lazy ones) count for the layers, but not for import cycles. ``aiohttp``
is imported by the session wire (a caller's own session) and the OAuth2 module alone (and by
the simulator, a server). The simulator imports nothing of the client, so it stays a
stand-alone product.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bulkopens"

BOTTOM = {
    "_exceptions", "_version", "_types", "_log", "_timefmt", "_redact", "_reports", "_stats",
    "_config", "_work", "_disk",
}  # fmt: skip
API = {
    "_wire",
    "_aiowire",
    "_http",
    "_retry",
    "_pagination",
    "_summaries",
    "_ids",
    "_check",
    "_oauth",
    "_tokens",
}
STORAGE = {"_state", "_files", "_writer", "_artifacts", "_status"}
ENGINE = {"_pipeline", "_jobs", "_campaigns", "_xref"}
CLIENT = {"_client"}


def layer(module: str) -> str:
    """The layer of a module named relative to the package (``_http``, ``cli._run``, ...)."""
    head = module.split(".")[0]
    if head == "cli":
        return "cli"
    if head == "simulator":
        return "simulator"
    if head == "_api":
        return "api"  # the API seam: one module per API version
    if module == "__main__":
        return "cli"  # ``python -m bulkopens``
    if module == "__init__":
        return "package"
    for name, members in (
        ("bottom", BOTTOM),
        ("api", API),
        ("storage", STORAGE),
        ("engine", ENGINE),
        ("client", CLIENT),
    ):
        if module in members:
            return name
    return "pacing"  # _ratelimit, and the budget modules that pace a key's requests


# What each layer may import (besides itself).
ALLOWED = {
    "bottom": {"bottom"},
    "pacing": {"bottom", "pacing"},
    "api": {"bottom", "pacing", "api"},
    "storage": {"bottom", "storage"},
    "engine": {"bottom", "pacing", "api", "storage", "engine"},
    "client": {"bottom", "pacing", "api", "storage", "engine", "client"},
    # The CLI uses the public package, the bottom layer, the two read-only helpers it
    # exposes as commands (check, status) and the token side (auth); never the engine, the
    # store or the transport.
    "cli": {"package", "bottom", "cli", "simulator", "check", "status", "auth"},
    "simulator": {"simulator"},
    "package": {"bottom", "pacing", "api", "storage", "engine", "client", "package"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(relative.parts)
        found[name.removesuffix(".__init__") if name.endswith(".__init__") else name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, types: bool = False) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every run-time import in ``path`` (with
    ``types``, the imports inside ``if TYPE_CHECKING:`` blocks too)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child) and not types:
                for inner in child.orelse:
                    visit(inner, top)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                if child.module == "bulkopens" or child.module.startswith("bulkopens."):
                    # ``from bulkopens.cli import _run`` names a module too
                    found.append((child.module, top))
                    found.extend((f"{child.module}.{a.name}", top) for a in child.names)
                else:
                    found.append((child.module, top))
            inner_top = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(child, inner_top)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def internal(name: str, known: dict[str, Path]) -> str | None:
    """The package module ``name`` refers to (relative name), or None for anything else."""
    if name == "bulkopens":
        return "__init__"
    if not name.startswith("bulkopens."):
        return None
    relative = name.removeprefix("bulkopens.")
    while relative and relative not in known:
        relative = relative.rpartition(".")[0]  # ``bulkopens.cli._run.run_fetch`` -> module
    return relative or None


def target_layer(module: str) -> str:
    if module == "_check":
        return "check"
    if module == "_status":
        return "status"
    if module in ("_oauth", "_tokens"):
        return "auth"
    return layer(module)


KNOWN = modules()
EDGES = [
    (source, target, top)
    for source, path in sorted(KNOWN.items())
    for name, top in imports(path)
    if (target := internal(name, KNOWN)) is not None and target != source
]


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_each_module_imports_only_its_layer_and_below(module: str) -> None:
    mine = layer(module)
    allowed = ALLOWED[mine] | {mine}
    wrong = sorted(
        target
        for source, target, _ in EDGES
        if source == module and target_layer(target) not in allowed and layer(target) not in allowed
    )
    assert not wrong, f"{module} ({mine}) imports {wrong} from a layer above or beside it"


def test_aiohttp_is_imported_by_the_session_wire_and_oauth_modules_alone() -> None:
    users = sorted(
        module
        for module, path in KNOWN.items()
        if layer(module) != "simulator"
        and any(name.split(".")[0] == "aiohttp" for name, _ in imports(path))
    )
    assert users == ["_aiowire", "_oauth"]


def test_a_run_that_renews_no_token_never_imports_aiohttp() -> None:
    """aiohttp's import is a tenth of a second of every run's start (issue 17): the lean wire
    carries the requests, and aiohttp comes in only for a caller's own session or OAuth2."""
    code = (
        "import sys, bulkopens, bulkopens.cli, bulkopens.cli._run, bulkopens._client, "
        "bulkopens._jobs, bulkopens._pipeline, bulkopens._tokens, bulkopens._oauth; "
        "bulkopens.Client, bulkopens.TokenFile; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'aiohttp'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_there_is_no_import_cycle_at_module_level() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, top in EDGES:
        if top and target != "__init__":
            graph.setdefault(source, set()).add(target)
    _assert_acyclic(graph)


def test_there_is_no_cycle_even_through_type_only_or_lazy_imports() -> None:
    """The structure reads one way: no module reaches back to one that (directly or not)
    imports it, not even for an annotation or a lazy import (the package's face, which
    hands every public name on lazily, aside)."""
    graph: dict[str, set[str]] = {}
    for source, path in KNOWN.items():
        for name, _ in imports(path, types=True):
            target = internal(name, KNOWN)
            if target is not None and target not in (source, "__init__"):
                graph.setdefault(source, set()).add(target)
    _assert_acyclic(graph)


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_rules_are_live(tmp_path: Path) -> None:
    """An upward import is caught: the store importing the transport breaks the rule."""
    fake = tmp_path / "_state.py"
    fake.write_text("from bulkopens._http import Page\n")
    (name, top), *_ = imports(fake)
    target = internal(name, KNOWN)
    assert target == "_http"
    assert top
    assert target_layer(target) not in ALLOWED[layer("_state")]
