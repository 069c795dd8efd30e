#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with what benchmarks/gpu_check.py needs on a GPU machine that reaches
# no package registry and whose image has torch, accelerate, tokenizers, safetensors, pandas and
# pyarrow, but not labtune nor the versions of transformers, peft and TRL it is tested with here:
# labtune's own wheel and those packages, at the versions of this project's venv, for CPython 3.12
# on x86-64 Linux; bitsandbytes (QLoRA) with its CUDA 13 libraries only, when the carry stays under
# MAX_MIB.
#
#   benchmarks/gpu_check_wheels.sh [MAX_MIB]    (default 60: a device call carries 64 MiB with the repo)
#
# Then, on the GPU machine, in the repository root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out gpu-check.json
set -euo pipefail
cd "$(dirname "$0")/.."
max_mib=${1:-60}
venv=$(hack/venv.sh)
dest=.whl
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
grep -qx '/.whl/' "$exclude" || echo /.whl/ >>"$exclude"
rm -rf "$dest" && mkdir -p "$dest"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# What the trainer and TRL import that the image lacks or has too old (transformers 5.23+ for
# activation_checkpointing; its hub client 2.x with httpx2; pydantic for labtune's config models).
packages=(transformers kernels huggingface_hub httpx2 httpcore2 truststore click peft trl datasets dill
  multiprocess pydantic pydantic_core annotated_types typing_inspection rapidfuzz)
version() { "$venv/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }
download() {
  "$venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$1" "${@:2}"
}
pins=()
for name in "${packages[@]}"; do pins+=("$name==$(version "$name")"); done
download "$dest" "${pins[@]}"
# setuptools' warnings about data folders are noise here: shown only when the build fails.
"$venv/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$dest" . >"$scratch/build.log" 2>&1 \
  || { cat "$scratch/build.log" >&2; exit 1; }

mib() { du -cm "$@" | tail -1 | cut -f1; }
repo=$(git ls-files -z | xargs -0 du -cm 2>/dev/null | tail -1 | cut -f1)
download "$scratch" "bitsandbytes==$(version bitsandbytes)"
# Its wheel holds a library for every CUDA and ROCm release (42 MiB); the device's torch is a CUDA 13
# build, so only the CUDA 13 libraries travel (about 3 MiB): unpacked, pruned and packed again by
# `wheel`, which writes the RECORD anew.
"$venv/bin/python" -m wheel unpack -d "$scratch/unpacked" "$scratch"/bitsandbytes-*.whl >/dev/null
find "$scratch/unpacked" -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda13*.so' -delete
mkdir -p "$scratch/slim"
"$venv/bin/python" -m wheel pack -d "$scratch/slim" "$scratch"/unpacked/bitsandbytes-* >/dev/null
total=$(($(mib "$dest") + repo))
bnb=$(mib "$scratch"/slim/*.whl)
if ((total + bnb <= max_mib)); then
  mv "$scratch"/slim/*.whl "$dest"/
  total=$((total + bnb))
else
  echo "gpu_check_wheels: bitsandbytes left out: its ${bnb} MiB would make the carry $((total + bnb)) MiB (over ${max_mib}); QLoRA is skipped there" >&2
fi
echo "gpu_check_wheels: $(ls "$dest" | wc -l) wheels in $dest, ${total} MiB with the repository" >&2
