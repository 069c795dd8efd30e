"""Trainer throughput: `labtune train` against a plain TRL SFTTrainer, measured in one run.

Same model (SmolLM2-135M-Instruct unless --model), same data (chat samples of varied length),
same LoRA settings, batch size, learning rate, maximum length and number of optimizer steps.
Each trainer runs in a process of its own; the figures are real (non-padding) input tokens per
second over the training loop (model loading excluded) and the process's peak RSS.

- labtune: `labtune train --config …` as a pod runs it: padding-free packed micro batches, loss
  over assistant tokens with logits only where trained.
- labtune, unmask: the same with every sample `unmask: true` (nearly every token trained), so the
  packing gain shows without the saving on logits.
- TRL: SFTTrainer with its defaults (pad to the longest sample of the batch, no packing, loss
  on every token), except what must match: precision (fp32 on CPU, bf16 on CUDA) and activation
  checkpointing (off on CPU, as labtune; on CUDA both follow --activation-checkpointing).

On CUDA it also prints labtune's model FLOPs utilization: 6 x parameters x tokens/s over the
GPU's dense bf16 peak (--peak-tflops; H100 and H200 SXM: 989).

    python benchmarks/trainer_throughput.py                  # CPU
    python benchmarks/trainer_throughput.py --device cuda    # GPU, bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VOCABULARY = (
    "the model learns facts from documents and answers questions about them with care while the "
    "operator schedules jobs on nodes with accelerators and records progress in the status of each "
    "resource so that people can follow training runs phase by phase until the adapter is merged"
)
WORDS = VOCABULARY.split()
SYSTEM = "You are a helpful assistant."


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def records(count: int, seed: int, unmask: bool, scale: int) -> list[dict[str, Any]]:
    """Chat samples whose lengths vary as real SDG data does: short to long questions and answers."""
    rng = random.Random(seed)
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": _text(rng, int(rng.uniform(5, 60) * scale))},
                {"role": "assistant", "content": _text(rng, int(rng.triangular(5, 150, 20) * scale))},
            ],
            "unmask": unmask,
        }
        for _ in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def measured(command: list[str], env: dict[str, str] | None = None) -> tuple[str, int]:
    """Runs a command; returns its stdout and peak RSS in bytes (of that process alone)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {process.returncode}")
    return stdout, usage.ru_maxrss * 1024


def run_labtune(args: argparse.Namespace, model: Path, dataset: Path, folder: Path) -> dict[str, float]:
    import yaml

    config = {
        "metricsPort": 0,
        "terminationLog": str(folder / "summary.json"),
        "output": str(folder / "out"),
        "baseModel": {"uri": str(model)},
        "datasets": {"skills": str(dataset)},
        "method": {
            "type": "lora",
            "lora": {"rank": args.lora_rank, "alpha": 2.0 * args.lora_rank, "dropout": 0.0},
        },
        "phases": [
            {
                "name": "bench",
                "dataset": "skills",
                "learningRate": 1e-4,
                "effectiveBatchSize": args.batch_size,
                "maxSeqLen": args.max_seq_len,
            }
        ],
        "evaluation": {"heldOutFraction": 0.0},
        "checkpoints": {"everySteps": 1_000_000},
        "microBatchSize": args.micro_batch_size,
        "activationCheckpointing": args.activation_checkpointing,
        "seed": args.seed,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    labtune = str(Path(sys.executable).parent / "labtune")
    _, rss = measured([labtune, "train", "--config", str(path)])
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "tokens": summary["tokens"],
        "tokens_per_second": summary["metrics"]["tokensPerSecond"],
        "rss": rss,
    }


def baseline_worker(args: argparse.Namespace) -> None:
    """TRL SFTTrainer in this process; prints the tokens and seconds of its training loop."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = [json.loads(line) for line in Path(args.dataset).read_text().splitlines()]
    dataset = datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])
    config = SFTConfig(
        output_dir=args.scratch,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4,
        max_length=args.max_seq_len,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        use_cpu=not cuda,
        bf16=cuda,
        gradient_checkpointing=bool(args.activation_checkpointing) and cuda,
        include_num_input_tokens_seen="non_padding",
    )
    lora = LoraConfig(
        r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0, target_modules="all-linear"
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )
    started = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - started
    print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "seconds": seconds}))


def run_baseline(args: argparse.Namespace, model: Path, dataset: Path, folder: Path) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--baseline-worker",
        "--model",
        str(model),
        "--dataset",
        str(dataset),
    ]
    command += ["--scratch", str(folder), "--device", args.device, "--steps", str(args.steps)]
    command += ["--batch-size", str(args.batch_size), "--max-seq-len", str(args.max_seq_len)]
    command += ["--lora-rank", str(args.lora_rank), "--seed", str(args.seed)]
    if args.activation_checkpointing:
        command.append("--activation-checkpointing")
    stdout, rss = measured(command)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"tokens": result["tokens"], "tokens_per_second": result["tokens"] / result["seconds"], "rss": rss}


def _parameters(model: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in model.glob("*.safetensors"):
        with safe_open(str(file), "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", type=Path, help="Hugging Face folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: 6 on CPU, 40 on CUDA)")
    parser.add_argument("--batch-size", type=int, help="samples per step (default: 8 on CPU, 32 on CUDA)")
    parser.add_argument(
        "--micro-batch-size", type=int, help="labtune's samples a forward pass (default: 8 on CUDA)"
    )
    parser.add_argument("--max-seq-len", type=int, help="default: 512 on CPU, 2048 on CUDA")
    parser.add_argument(
        "--length-scale", type=int, help="sample length multiplier (default: 1 on CPU, 4 on CUDA)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds; each trainer's best counts"
    )
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--activation-checkpointing", action="store_true", help="on CUDA, for both trainers")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak, for MFU")
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.steps = args.steps or (40 if cuda else 6)
    args.batch_size = args.batch_size or (32 if cuda else 8)
    args.micro_batch_size = args.micro_batch_size or (8 if cuda else args.batch_size)
    args.max_seq_len = args.max_seq_len or (2048 if cuda else 512)
    args.length_scale = args.length_scale or (4 if cuda else 1)
    if args.baseline_worker:
        baseline_worker(args)
        return

    from labtune.trainer.gguf_cache import hf_folder
    from labtune_dev.models import smollm2_gguf

    model = args.model or hf_folder(smollm2_gguf())
    count = args.steps * args.batch_size
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="labtune-bench-") as scratch:
        root = Path(scratch)
        assistant_only = write_jsonl(
            root / "assistant.jsonl", records(count, args.seed, False, args.length_scale)
        )
        unmask = write_jsonl(root / "unmask.jsonl", records(count, args.seed, True, args.length_scale))
        runs = (
            ("labtune", run_labtune, assistant_only),
            ("labtune, unmask", run_labtune, unmask),
            ("TRL SFTTrainer", run_baseline, assistant_only),
        )
        # Rounds interleave the trainers; each keeps its best round, so a burst of load from
        # other processes on the machine does not decide the ratio.
        for round_ in range(args.rounds):
            for index, (name, runner, dataset) in enumerate(runs):
                folder = root / f"run-{round_}-{index}"
                folder.mkdir()
                result = runner(args, model, dataset, folder)
                best = results.setdefault(name, result)
                if result["tokens_per_second"] > best["tokens_per_second"]:
                    results[name] = result | {"rss": max(result["rss"], best["rss"])}

    baseline = results["TRL SFTTrainer"]["tokens_per_second"]
    print(
        f"{args.steps} steps x {args.batch_size} samples (labtune: micro batches of "
        f"{args.micro_batch_size}), max {args.max_seq_len} tokens, LoRA r{args.lora_rank}, "
        f"{args.device}, best of {args.rounds} rounds"
    )
    print(f"{'trainer':<18}{'tokens':>9}{'tokens/s':>11}{'vs TRL':>8}{'peak RSS':>11}")
    for name, result in results.items():
        print(
            f"{name:<18}{int(result['tokens']):>9}{result['tokens_per_second']:>11.1f}"
            f"{result['tokens_per_second'] / baseline:>7.2f}x{result['rss'] / 2**30:>9.2f}GiB"
        )
    if cuda:
        flops = 6 * _parameters(model) * results["labtune"]["tokens_per_second"]
        print(
            f"labtune MFU: {flops / (args.peak_tflops * 1e12):.1%} "
            f"of {args.peak_tflops:g} TFLOPS (6N FLOPs per token)"
        )


if __name__ == "__main__":
    main()
