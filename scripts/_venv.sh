# Sourced by the scripts: makes .venv (once) and installs the project into it.
# Usage: venv_extra=test . scripts/_venv.sh   (venv_extra: an optional-dependencies extra)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bulkopens needs Python 3.11 or newer; $py is $("$py" -V 2>&1)" >&2
    exit 2
}
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "bulkopens: first run: making .venv and installing bulkopens into it (about 30 s)..." >&2
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
extra=${venv_extra:-}
spec="$root"
[ -n "$extra" ] && spec="$root[$extra]"
stamp="$venv/.installed-${extra:-base}-compat"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "bulkopens: installing bulkopens${extra:+ with its $extra tools} into .venv..." >&2
    # editable_mode=compat: a plain path entry, which a type checker follows (setuptools'
    # default editable install is an import hook that mypy and pyright cannot see through).
    # The build backend's own notices (editable mode) are not the user's concern.
    PYTHONWARNINGS=ignore "$venv/bin/python" -m pip install -q -e "$spec" \
        --config-settings editable_mode=compat
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
