#!/usr/bin/env bash
# Runs mypy on the labtune distribution as it is installed (labtune.operator from operator/, …).
# mypy does not follow setuptools' editable-install finder, so it gets a tree of symlinks laid out
# like the installed package; error paths read build/typecheck/labtune/<folder>/<file>.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree="$root/build/typecheck"
rm -rf "$tree" && mkdir -p "$tree/labtune"
for entry in "$root"/labtune/*; do ln -s "$entry" "$tree/labtune/"; done
for folder in operator generator trainer; do ln -s "$root/$folder" "$tree/labtune/$folder"; done
ln -s "$root/dev/labtune_dev" "$tree/labtune_dev"
cd "$tree"
exec "${MYPY:-mypy}" --config-file "$root/pyproject.toml" -p labtune -p labtune_dev "$@"
