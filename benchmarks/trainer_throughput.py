"""Trainer throughput: labtune's trainer against TRL's SFTTrainer, default and best, in one run.

Same model (SmolLM2-135M-Instruct unless --model), same data (chat samples of varied length), same
LoRA settings, batch size, learning rate, maximum length and number of optimizer steps. Each run is
a process of its own (`trainer_runs.py`); the figures are real (non-padding) input tokens per
second over the steady-state optimizer steps (model loading, the first step and the closing
checkpoint left out) and the process's peak RSS.

- labtune: its phase training as `labtune train` runs it: padding-free packed micro batches, loss
  over assistant tokens with logits only where trained.
- labtune, unmask: the same with every sample `unmask: true` (nearly every token trained), so the
  packing gain shows without the saving on logits.
- TRL default: SFTTrainer's defaults (pad to the longest sample of the batch, no packing, loss on
  every token).
- TRL packed: its best configuration for this data: best-fit-decreasing packing into rows of the
  maximum length, which makes its batches padding-free, with as many rows per forward pass as hold
  labtune's micro batch.

Both sides use fp32 on CPU and bf16 on CUDA; activation checkpointing follows
--activation-checkpointing for all. The rounds run the four in alternating order (reversed every
other round); each ratio is the median over the rounds of that round's ratio, so a pair of runs
sees the same machine load. On CUDA it also prints labtune's MFU (6 x parameters x tokens/s over
--peak-tflops); benchmarks/gpu_check.py measures the GPU properly.

    python benchmarks/trainer_throughput.py                  # CPU
    python benchmarks/trainer_throughput.py --rounds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from trainer_runs import Case, records, run_cases, write_jsonl

RUNS = (
    ("labtune", "labtune", "assistant"),
    ("labtune, unmask", "labtune", "unmask"),
    ("TRL default", "trl-default", "assistant"),
    ("TRL packed", "trl-packed", "assistant"),
)


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
    parser.add_argument("--model", type=Path, help="Hugging Face folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--steps", type=int, help="measured optimizer steps (default: 6 on CPU, 40 on CUDA)")
    parser.add_argument("--batch-size", type=int, help="samples per step (default: 8 on CPU, 32 on CUDA)")
    parser.add_argument("--micro-batch-size", type=int, help="samples a forward pass (default: 8)")
    parser.add_argument("--max-seq-len", type=int, help="default: 512 on CPU, 2048 on CUDA")
    parser.add_argument(
        "--length-scale", type=int, help="sample length multiplier (default: 1 on CPU, 4 on CUDA)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four runs; ratios are medians")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak, for MFU")
    args = parser.parse_args()

    import torch

    from labtune.trainer.gguf_cache import hf_folder
    from labtune_dev.models import smollm2_gguf

    cuda = torch.cuda.is_available()
    steps = args.steps or (40 if cuda else 6)
    batch_size = args.batch_size or (32 if cuda else 8)
    scale = args.length_scale or (4 if cuda else 1)
    model = args.model or hf_folder(smollm2_gguf())
    warmup = 1
    count = batch_size * (warmup + steps)
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in RUNS}
    with tempfile.TemporaryDirectory(prefix="labtune-bench-") as scratch:
        root = Path(scratch)
        data = {
            "assistant": write_jsonl(root / "assistant.jsonl", records(count, args.seed, False, scale)),
            "unmask": write_jsonl(root / "unmask.jsonl", records(count, args.seed, True, scale)),
        }
        base = Case(
            trainer="labtune",
            model=str(model),
            dataset="",
            folder="",
            activation_checkpointing=args.activation_checkpointing,
            batch_size=batch_size,
            micro_batch_size=args.micro_batch_size or 8,
            max_seq_len=args.max_seq_len or (2048 if cuda else 512),
            warmup_steps=warmup,
            steps=steps,
            lora_rank=args.lora_rank,
            seed=args.seed,
        )
        for round_ in range(args.rounds):
            order = RUNS if round_ % 2 == 0 else RUNS[::-1]
            for name, trainer, dataset in order:
                folder = root / f"round-{round_}" / name.replace(" ", "_").replace(",", "")
                case = dataclasses.replace(
                    base, trainer=trainer, dataset=str(data[dataset]), folder=str(folder)
                )
                (result,) = run_cases([case])
                if "error" in result:
                    raise SystemExit(f"{name}: {result['error']}")
                figures[name].append(result)
                print(
                    f"round {round_ + 1} {name:<16}{result['tokens_per_second']:>9.1f} tokens/s", flush=True
                )

    def ratio(name: str, baseline: str) -> tuple[float, list[float]]:
        per_round = [
            a["tokens_per_second"] / b["tokens_per_second"]
            for a, b in zip(figures[name], figures[baseline], strict=True)
        ]
        return statistics.median(per_round), per_round

    print(
        f"\n{steps} measured steps x {batch_size} samples (micro batches of {base.micro_batch_size}), max "
        f"{base.max_seq_len} tokens, LoRA r{args.lora_rank}, {'cuda' if cuda else 'cpu'}, "
        f"{args.rounds} rounds"
    )
    print(f"{'trainer':<18}{'tokens/s':>10}  {'vs TRL default':<25}{'vs TRL packed':<25}{'peak RSS':>9}")
    for name, results in figures.items():
        speed = statistics.median(r["tokens_per_second"] for r in results)
        columns = []
        for baseline in ("TRL default", "TRL packed"):
            median, per_round = ratio(name, baseline)
            columns.append(f"{median:.2f}x ({' '.join(f'{r:.2f}' for r in per_round)})")
        rss = max(r["rss"] for r in results) / 2**30
        print(f"{name:<18}{speed:>10.1f}  {columns[0]:<25}{columns[1]:<25}{rss:>6.2f}GiB")
    if cuda:
        speed = statistics.median(r["tokens_per_second"] for r in figures["labtune"])
        flops = 6 * _parameters(Path(model)) * speed
        print(
            f"labtune MFU: {flops / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops:g} TFLOPS "
            "(6N per token)"
        )


if __name__ == "__main__":
    main()
