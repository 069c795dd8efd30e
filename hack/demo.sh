#!/usr/bin/env bash
# The local demo: the LAB pipeline end to end on a real single-node Kubernetes cluster on this machine.
#   control plane (etcd, kube-apiserver, controller-manager, scheduler) + a real node (containerd,
#   runc, CNI, kubelet, kube-proxy, CoreDNS), all built once from their sources and cached
#   + the project's three images, built here with buildah and loaded into the node
#   + the operator, installed with `helm install` from charts/labtune
#   + a demo taxonomy in an https git server + SmolLM2-135M-Instruct as the teacher (llama.cpp)
#   then Taxonomy -> SyntheticDataRun -> TuningJob from examples/demo/manifests/.
#   hack/demo.sh up | down          (root: the node needs network namespaces, mounts and cgroups)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(hack/venv.sh)
export PATH="$venv/bin:$PATH"

case "${1:-up}" in
  down)
    labtune-dev demo down
    labtune-dev controlplane down
    exit 0
    ;;
  up) ;;
  *) echo "usage: hack/demo.sh up|down" >&2; exit 2 ;;
esac

t0=$SECONDS
mark() { printf '\033[2m[%3ds] %s\033[0m\n' "$((SECONDS - t0))" "$*"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# The images build (downloads, disk) while the cluster's Go binaries build (CPU): on a cold cache
# the set-up takes the longer of the two, not their sum.
labtune-dev images build >/dev/null &
images=$!
trap 'kill "$images" 2>/dev/null || true' EXIT
labtune-dev controlplane up --node >/dev/null
eval "$(labtune-dev controlplane env)"
mark "control plane and node up"
wait "$images"
trap - EXIT
mark "images built"
labtune-dev demo up --examples examples/demo >/dev/null
mark "git server, teacher, artifact claim with the base model, images in the node, operator (helm): up"

step kubectl get nodes -o wide
step kubectl get pods -n labtune-system -o wide
step kubectl apply -f examples/demo/manifests/
# kubectl wait, in short rounds, so that a failed resource stops the demo instead of a timeout.
await() {  # kind condition timeout
  local deadline=$((SECONDS + $3))
  printf '\n\033[1m$ kubectl wait --for=condition=%s --timeout=%ss %s/demo\033[0m\n' "$2" "$3" "$1"
  until kubectl wait --for="condition=$2" --timeout=10s "$1/demo" 2>/dev/null; do
    failed=$(kubectl get "$1" demo -o jsonpath='{.status.conditions[?(@.type=="Stalled")].status}{.status.state}')
    if [[ "$failed" == True* || "$failed" == *Failed || $SECONDS -gt $deadline ]]; then
      kubectl get "$1" demo -o jsonpath='{range .status.conditions[*]}{.type}={.status}: {.message}{"\n"}{end}' >&2
      echo "demo: $1/demo did not reach $2; see kubectl get pods -o wide, kubectl logs <pod>," \
        "kubectl -n labtune-system logs deploy/labtune" >&2
      exit 1
    fi
  done
}
state=$(labtune-dev demo up --examples examples/demo)
claim=$(python -c 'import json,sys; print(json.load(sys.stdin)["claim_dir"])' <<<"$state")
await taxonomy Ready 300
mark "Taxonomy synced"
await syntheticdatarun Succeeded 900
mark "SyntheticDataRun succeeded"
await tuningjob Succeeded 900
mark "TuningJob succeeded"

step kubectl get labtune -o wide
step kubectl get pods -o wide
step kubectl logs job/demo-train --tail=4
for kind in taxonomy syntheticdatarun tuningjob; do
  printf '\n\033[1m$ kubectl get %s demo -o jsonpath=…conditions\033[0m\n' "$kind"
  kubectl get "$kind" demo -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'
done
printf '\n\033[1mTaxonomy revision:\033[0m %s\n' "$(kubectl get taxonomy demo -o jsonpath='{.status.revision}')"
printf '\033[1mSyntheticDataRun outputs:\033[0m\n'
kubectl get sdr demo -o jsonpath='{range .status.outputs.*}{.uri}  samples={.samples}  sha256={.sha256}  sources={.sources}{"\n"}{end}'
printf '\033[1mTuningJob output:\033[0m\n'
kubectl get tj demo -o jsonpath='{.status.output}{"\n"}'
printf '\033[1mTuningJob evaluation (held-out seed questions, base -> tuned):\033[0m\n'
kubectl get tj demo -o jsonpath='{range .status.evaluation.benchmarks[*]}{.name}: {.examples} questions  nll {.base.nll} -> {.tuned.nll}  contains {.base.contains} -> {.tuned.contains}  rougeL {.base.rougeL} -> {.tuned.rougeL}{"\n"}{end}'
kubectl get tj demo -o jsonpath='output from {.status.evaluation.checkpoint.phase} step {.status.evaluation.checkpoint.step} (by {.status.evaluation.checkpoint.selectedBy}); scored in {.status.evaluation.seconds}s{"\n"}'

printf '\n\033[1mThe files on the artifact claim (%s), with their sha256:\033[0m\n' "$claim"
(cd "$claim" && sha256sum datasets/*.jsonl models/demo/adapter/*)
printf '\033[1mThe adapter digest in status is the sha256 of its SHA256SUMS listing:\033[0m\n'
(cd "$claim/models/demo/adapter" && sha256sum -c --quiet SHA256SUMS && sha256sum SHA256SUMS)
mark "done"
cat <<EOT

Everything keeps running. Use it with:
  $(labtune-dev controlplane env)
  kubectl get labtune -o wide
Pod logs: kubectl logs <pod>; the operator's: kubectl -n labtune-system logs deploy/labtune.
Stop everything with: make demo-down
EOT
