#!/usr/bin/env bash
# The test command: sets up the venv and control-plane binaries (cached), then runs the checks.
#   hack/test.sh all|lint|typecheck|unit|integration|crds [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}; shift || true

venv=$(hack/venv.sh)
export PATH="$venv/bin:$PATH" MYPY="$venv/bin/mypy"

lint()      { ruff check . && ruff format --check .; }
typecheck() { hack/typecheck.sh; }
binaries()  { export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$(labtune-dev controlplane build)}; labtune-dev tools >&2; }

case "$what" in
  lint) lint ;;
  typecheck) typecheck ;;
  crds) labtune crds generate ;;
  unit) pytest tests/unit "$@" ;;
  integration) binaries; pytest tests/integration "$@" ;;
  all)
    lint
    typecheck
    labtune crds check
    binaries
    pytest tests "$@"
    ;;
  *) echo "usage: hack/test.sh all|lint|typecheck|unit|integration|crds [pytest args]" >&2; exit 2 ;;
esac
