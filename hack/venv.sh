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
key=$( { "$python" -V 2>&1; cat "$root/pyproject.toml" "$root/dev/pyproject.toml"; echo "$extras $root"; } \
  | sha256sum | cut -c1-12)
venv="$cache/venvs/$key"
stamp="$venv/.labtune-installed-from"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "venv: creating $venv" >&2
  "$uv" venv --quiet --python "$python" "$venv"
fi
# llama-cpp-python (dev extra) is published as source only: its wheel is built once into the cache,
# where every later venv finds it (uv's own build cache was rebuilt for each new venv here). Without
# the multimodal library (LLAVA_BUILD), which the demo's teacher does not use: 4 min 57 s against
# 7 min 8 s on 2 cores.
wheels="$cache/wheels"
mkdir -p "$wheels"
llama=$(grep -o '"llama-cpp-python[^"]*"' "$root/pyproject.toml" | tr -d '"' || true)
if [[ ! -f "$stamp" && -n "$llama" && ",$extras," == *",dev,"* ]] \
  && ! compgen -G "$wheels/llama_cpp_python-*.whl" >/dev/null; then
  echo "venv: building the $llama wheel once into $wheels (several minutes)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAVA_BUILD=OFF" \
    "$uv" tool run --quiet --from pip pip wheel --quiet --no-deps --wheel-dir "$wheels" "$llama" >&2
fi
# The dev cluster's own distribution (dev/, `labtune-dev`) comes with the dev extra only: it is never
# part of the labtune wheel or of an image.
dev=()
[[ ",$extras," == *",dev,"* ]] && dev=(-e "$root/dev")
if [[ ! -f "$stamp" ]]; then
  echo "venv: installing labtune[$extras] (editable) into $venv" >&2
  VIRTUAL_ENV="$venv" "$uv" pip install --quiet --python "$venv/bin/python" --find-links "$wheels" \
    -e "$root[$extras]" "${dev[@]}"
  printf '%s\n%s\n' "$root" "$extras" >"$stamp"
  # Venvs of this clone and extras from an older pyproject.toml are removed, and those of clones
  # gone for a week (a CI checkout that comes back at the same path reuses its venv meanwhile);
  # a venv still being installed has no stamp yet and is left alone.
  for other in "$cache"/venvs/*/; do
    other=${other%/}
    [[ "$other" != "$venv" && -f "$other/.labtune-installed-from" ]] || continue
    { read -r from; read -r from_extras || from_extras=dev; } <"$other/.labtune-installed-from"
    if [[ ( "$from" == "$root" && "$from_extras" == "$extras" ) \
      || ( ! -d "$from" && -n "$(find "$other/.labtune-installed-from" -mtime +7)" ) ]]; then
      echo "venv: removing $other (made for $from [$from_extras])" >&2
      rm -rf "$other"
    fi
  done
fi
echo "$venv"
