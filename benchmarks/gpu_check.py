"""The GPU check: every trainer figure in one command, within a few minutes on one GPU.

    python benchmarks/gpu_check.py --out gpu-check.json          # on a CUDA GPU
    python benchmarks/gpu_check.py --tiny --out tiny.json         # on CPU: a 2-layer model, 3 steps

Models are random-initialised Llama-architecture models built here (no weights to download): about
1B parameters (Llama 3.2 1B's layers) and SmolLM2-135M's architecture (`trainer_runs.ARCHITECTURES`).
For each: labtune's trainer (the code `labtune train` runs for a phase) with LoRA and full fine-tune,
bf16, packed micro batches, with and without activation checkpointing; real (non-padding) tokens per
second over the steady-state steps, MFU and peak GPU memory. Then TRL's SFTTrainer in its best
configuration (packing, padding-free) on the same data and the same 1B model (the ratio), QLoRA
(bitsandbytes NF4) when bitsandbytes is installed, and the likelihood scorer of `labtune evaluate`.
Cases run most important first; one that would start past --budget-s is skipped and says so.

MFU counts the FLOPs the method needs per trained token: 6N for a full fine-tune, 4N for LoRA and
QLoRA (frozen weights get no weight gradients), N the model's parameters, plus 12·layers·hidden·T
for attention, T the token-weighted mean sample length (each packed sample attends to itself
only); activation checkpointing's recomputation is not counted. It is given against --peak-tflops
(the dense bf16 peak: 989 for H100/H200 SXM) and against --measured-peak-tflops (what an
8192³ bf16 matrix product reaches on the H200 here, about 790).

On CPU (--tiny) the same cases run on a tiny model so the script keeps working; its figures are
marked as CPU figures and no MFU is given. Exit status: 0 when every case ran or was skipped with
its reason, 1 when one failed (its error is in the report), 2 on a GPU run without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from trainer_runs import ARCHITECTURES, Case, build_model, run_cases, token_lengths, write_jsonl
from trainer_runs import records as chat_records

PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes", "labtune")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big a run is: GPU sizes by default, a few tiny steps with --tiny."""

    architectures: tuple[str, ...] = ("llama-1b", "smollm2-135m")
    steps: dict[str, int] = dataclasses.field(
        default_factory=lambda: (
            {"batch_size": 32, "micro_batch_size": 8, "max_seq_len": 2048} | {"warmup_steps": 3, "steps": 10}
        )
    )
    """The Case fields that size each training run."""
    length_scale: int = 4
    """Sample length multiplier (`trainer_runs.records`)."""
    scored_examples: int = 256
    """Samples the likelihood scorer scores."""


TINY = Sizes(
    architectures=("tiny",),
    steps={"batch_size": 4, "micro_batch_size": 2, "max_seq_len": 512, "warmup_steps": 1, "steps": 2},
    length_scale=1,
    scored_examples=8,
)


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {"python": platform.python_version(), "packages": versions}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info |= {
            "device": "cuda",
            "gpu": properties.name,
            "gpu_memory_bytes": properties.total_memory,
            "cuda": torch.version.cuda,
            "driver": _driver(),
            "flash_attn": importlib.util.find_spec("flash_attn") is not None,
        }
    else:
        info |= {"device": "cpu", "cpu": platform.processor() or platform.machine()}
    return info


def _driver() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else None


def attention_length(dataset: Path, model: Path) -> float:
    """The token-weighted mean sample length (sum of squares over sum), for attention's FLOPs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    lengths = token_lengths(tokenizer, rows)
    return sum(n * n for n in lengths) / sum(lengths)


def mfu(result: dict[str, Any], model: dict[str, Any], peaks: tuple[float, float]) -> dict[str, float]:
    shape = ARCHITECTURES[model["architecture"]]
    per_token = (6 if result["method"] == "full" else 4) * model["parameters"]
    per_token += 12 * shape["num_hidden_layers"] * shape["hidden_size"] * model["attention_length"]
    flops = per_token * result["tokens_per_second"]
    return {
        "tflops": flops / 1e12,
        "mfu": flops / (peaks[0] * 1e12),
        "mfu_measured_peak": flops / (peaks[1] * 1e12),
    }


@dataclasses.dataclass
class Planned:
    name: str
    case: Case
    meta: dict[str, Any]
    skip: str | None = None
    """Why it cannot run here (then it is reported, not started)."""


def plan(sizes: Sizes, models: dict[str, dict[str, Any]], root: Path, cuda: bool) -> list[Planned]:
    """The cases, most important first: the 1B model's runs and TRL's, then QLoRA, the scorer, the
    135M model's runs."""
    count = sizes.steps["batch_size"] * (sizes.steps["warmup_steps"] + sizes.steps["steps"])
    dataset = write_jsonl(root / "samples.jsonl", chat_records(count, 42, False, sizes.length_scale))
    trl_missing = None if importlib.util.find_spec("trl") else "TRL is not installed"
    qlora_missing = (
        "QLoRA needs a CUDA GPU"
        if not cuda
        else None
        if importlib.util.find_spec("bitsandbytes")
        else "bitsandbytes is not installed (its wheel did not travel: see benchmarks/README.md)"
    )

    def case(
        kind: str, architecture: str, method: str = "lora", checkpointing: bool = False, **sizing: Any
    ) -> Planned:
        name = f"{kind} {architecture} {method}{' +AC' if checkpointing else ''}"
        if kind == "likelihood":
            name = f"{kind} {architecture}"
        meta = {
            "trainer": kind,
            "architecture": architecture,
            "method": method,
            "activation_checkpointing": checkpointing,
        }
        spec = Case(
            trainer=kind,
            model=models[architecture]["path"],
            dataset=str(dataset),
            folder=str(root / "runs" / name.replace(" ", "_").replace("+", "")),
            method=method,
            activation_checkpointing=checkpointing,
            **sizes.steps | sizing,
        )
        return Planned(name, spec, meta)

    big, *others = sizes.architectures
    planned = [case("labtune", big, "full"), case("labtune", big, "lora")]
    planned += [dataclasses.replace(case("trl-packed", big, m), skip=trl_missing) for m in ("lora", "full")]
    planned += [case("labtune", big, "full", True), case("labtune", big, "lora", True)]
    planned.append(dataclasses.replace(case("labtune", big, "qlora", True), skip=qlora_missing))
    # The scorer: scored_examples samples, 16 to a forward pass (the evaluation's default batch).
    planned.append(case("likelihood", big, batch_size=sizes.scored_examples, steps=1, micro_batch_size=16))
    for architecture in others:
        planned += [case("labtune", architecture, m, ac) for m in ("lora", "full") for ac in (False, True)]
    return planned


def execute(planned: list[Planned], deadline: float) -> list[dict[str, Any]]:
    """Runs the cases that can run here in one worker process, in order; the others are reported
    with the reason they were skipped."""
    entries = [{"name": item.name, **item.meta} for item in planned]
    runnable = [index for index, item in enumerate(planned) if not item.skip]
    for index, item in enumerate(planned):
        if item.skip:
            entries[index]["skipped"] = item.skip
    pending = iter(runnable)

    def report(result: dict[str, Any]) -> None:
        entry = entries[next(pending)]
        entry |= result
        print(_line(entry), flush=True)

    results = run_cases([planned[i].case for i in runnable], deadline, report)
    for index, result in zip(runnable, results, strict=True):
        entries[index] |= result
    return entries


def _line(entry: dict[str, Any]) -> str:
    if "skipped" in entry:
        return f"{entry['name']:<34} skipped: {entry['skipped']}"
    if "error" in entry:
        return f"{entry['name']:<34} FAILED: {entry['error']}"
    text = f"{entry['name']:<34} {entry['tokens_per_second']:>10.1f} tokens/s"
    if "mfu" in entry:
        text += f"  MFU {entry['mfu']:>6.1%} ({entry['mfu_measured_peak']:.1%} of measured peak)"
    if entry.get("peak_gpu_memory"):
        text += f"  {entry['peak_gpu_memory'] / 2**30:>6.1f} GiB"
    if "vs_trl" in entry:
        text += f"  {entry['vs_trl']:.2f}x TRL packed"
    return text


def annotate(
    results: list[dict[str, Any]], models: dict[str, dict[str, Any]], peaks: tuple[float, float], cuda: bool
) -> None:
    """MFU on a GPU, and labtune's ratio to TRL's best configuration for the same model and method."""
    ran = [r for r in results if "tokens_per_second" in r and "trainer" in r]
    for result in ran:
        if cuda:
            result |= mfu(result, models[result["architecture"]], peaks)
    for result in ran:
        if result["trainer"] != "labtune" or result["activation_checkpointing"]:
            continue
        trl = [
            r
            for r in ran
            if r["trainer"] == "trl-packed"
            and (r["architecture"], r["method"]) == (result["architecture"], result["method"])
        ]
        if trl:
            result["vs_trl"] = result["tokens_per_second"] / trl[0]["tokens_per_second"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model and a few steps (CPU is fine)")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON report")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)"
    )
    parser.add_argument(
        "--measured-peak-tflops", type=float, default=790.0, help="the bf16 matmul peak measured"
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="no case starts past this (seconds)")
    parser.add_argument("--scratch", type=Path, help="folder for models and runs (default: a temporary one)")
    args = parser.parse_args()

    import torch

    started = time.monotonic()
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("gpu_check: no CUDA GPU here; run it with --tiny to check the script on CPU", file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else Sizes()
    env = environment()
    print(f"gpu_check on {env.get('gpu') or env['device']}: {json.dumps(env['packages'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="labtune-gpu-check-", dir=args.scratch) as scratch:
        root = Path(scratch)
        models = {}
        for architecture in sizes.architectures:
            folder = root / "models" / architecture
            parameters = build_model(folder, architecture, "cuda" if cuda else "cpu")
            models[architecture] = {
                "architecture": architecture,
                "path": str(folder),
                "parameters": parameters,
            }
        planned = plan(sizes, models, root, cuda)
        for model in models.values():
            model["attention_length"] = attention_length(root / "samples.jsonl", Path(model["path"]))
        results = execute(planned, time.time() + args.budget_s - (time.monotonic() - started))
    annotate(results, models, (args.peak_tflops, args.measured_peak_tflops), cuda)
    report = {
        "environment": env,
        "gpu_figures": cuda,
        "sizes": dataclasses.asdict(sizes),
        "models": {name: {k: v for k, v in m.items() if k != "path"} for name, m in models.items()},
        "peak_tflops": {"spec": args.peak_tflops, "measured": args.measured_peak_tflops},
        "results": results,
        "wall_seconds": time.monotonic() - started,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'GPU' if cuda else 'CPU (not GPU figures)'} check, {report['wall_seconds']:.0f} s:")
    for entry in results:
        print("  " + _line(entry))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
