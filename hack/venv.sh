#!/usr/bin/env bash
# Creates (once) the project's virtual environment in a cache folder outside the clone, keyed by
# the Python version and pyproject.toml, installs labtune editable with the requested extras, and
# prints the venv path. Re-running with nothing changed takes a second.
#
#   EXTRAS        (default dev)  comma-separated extras to install
#   LABTUNE_CACHE (default $XDG_CACHE_HOME/labtune or ~/.cache/labtune)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
extras=${EXTRAS:-dev}
cache=${LABTUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/labtune}
python=${PYTHON:-python3}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "venv: labtune needs Python >= 3.11 ($python is $("$python" -V 2>&1))" >&2; exit 1; }

# uv installs in seconds what pip takes minutes for; bootstrap it into the cache once.
uv=$(command -v uv || true)
if [[ -z "$uv" ]]; then
  uv="$cache/tools/bin/uv"
  if [[ ! -x "$uv" ]]; then
    echo "venv: bootstrapping uv into $cache/tools" >&2
    "$python" -m venv "$cache/tools"
    "$cache/tools/bin/pip" install --quiet --disable-pip-version-check "uv>=0.5"
  fi
fi

# One venv per clone (its editable install points there), Python and dependency set.
key=$( { "$python" -V 2>&1; cat "$root/pyproject.toml"; echo "$extras $root"; } | sha256sum | cut -c1-12)
venv="$cache/venvs/$key"
stamp="$venv/.labtune-installed-from"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "venv: creating $venv" >&2
  "$uv" venv --quiet --python "$python" "$venv"
fi
if [[ ! -f "$stamp" ]]; then
  echo "venv: installing labtune[$extras] (editable) into $venv" >&2
  VIRTUAL_ENV="$venv" "$uv" pip install --quiet --python "$venv/bin/python" -e "$root[$extras]"
  echo "$root" >"$stamp"
fi
echo "$venv"
