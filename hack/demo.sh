#!/usr/bin/env bash
# The local demo: a real Kubernetes control plane on loopback (built once from the Go modules,
# cached), the labtune.io CRDs installed, the examples applied and shown through kubectl.
#   hack/demo.sh up | down
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(hack/venv.sh)
export PATH="$venv/bin:$PATH"

case "${1:-up}" in
  down)
    labtune dev controlplane down
    exit 0
    ;;
  up) ;;
  *) echo "usage: hack/demo.sh up|down" >&2; exit 2 ;;
esac

labtune dev controlplane up
eval "$(labtune dev controlplane env)"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step kubectl apply --server-side -f crds/
step kubectl wait --for=condition=Established --timeout=60s -f crds/
step kubectl apply --server-side -f examples/
step kubectl get labtune -o wide
step kubectl explain tuningjob.spec.method
echo
echo "A bad manifest is rejected by the API server before the operator sees it:"
printf '\033[1m$ kubectl apply -f - <<< (TuningJob with method qlora on 0 GPUs)\033[0m\n'
kubectl apply -f - <<'YAML' || true
apiVersion: labtune.io/v1alpha1
kind: TuningJob
metadata: {name: bad-qlora}
spec:
  baseModel: {uri: pvc://models/granite}
  data: {knowledge: pvc://data/k.jsonl, skills: pvc://data/s.jsonl}
  method: {type: qlora}
  resources: {gpusPerNode: 0}
YAML
cat <<EOT

The control plane keeps running. Use it with:
  $(labtune dev controlplane env)
  kubectl get tuningjobs
Stop it with: make demo-down
EOT
