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
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
extra=${venv_extra:-}
spec="$root"
[ -n "$extra" ] && spec="$root[$extra]"
stamp="$venv/.installed-${extra:-base}"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    # The build backend's own notices (editable mode) are not the user's concern.
    PYTHONWARNINGS=ignore "$venv/bin/python" -m pip install -q -e "$spec"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
