"""Measured training runs for the trainer benchmarks, in a process of their own.

- The data: chat samples whose lengths vary as SDG data does (`records`).
- The models: random-initialised Llama-architecture models built on the spot with a word-level
  tokenizer and a ChatML template (`build_model`), so no weights need to travel.
- The run: labtune's phase training (`train_phase`, what `labtune train` runs for each phase: the
  same model loading, packed micro batches and loss) or TRL's SFTTrainer, timed by one callback
  over its steady-state optimizer steps: the first `warmup` steps (kernel selection, allocator
  growth) and the checkpoint written after the last step are left out.

    python benchmarks/trainer_runs.py --worker CASES.json   # one JSON line per case
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

VOCABULARY = (
    "the model learns facts from documents and answers questions about them with care while the "
    "operator schedules jobs on nodes with accelerators and records progress in the status of each "
    "resource so that people can follow training runs phase by phase until the adapter is merged"
)
WORDS = VOCABULARY.split()
SYSTEM = "You are a helpful assistant."
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Llama-architecture shapes (tied embeddings). llama-1b: Llama 3.2 1B's layers with a 32k vocabulary
# (1.04B parameters); smollm2-135m: SmolLM2-135M's config; tiny: for the CPU run in the tests.
ARCHITECTURES: dict[str, dict[str, int]] = {
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32768,
    },
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
    },
}

RESULT = "labtune-bench-result: "
"""How the worker's result lines begin on its stdout."""
Kind = Literal["labtune", "trl-default", "trl-packed", "likelihood"]
"""What a case runs: a trainer, or `likelihood`: the evaluation's scorer on the model."""


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


def measured(
    command: list[str], env: dict[str, str] | None = None, lines: Callable[[str], None] | None = None
) -> tuple[str, int]:
    """Runs a command; returns its stdout (each line also given to `lines` as it comes) and its
    peak RSS in bytes (of that process alone). A failed command raises RuntimeError with the last
    line it wrote to stderr (its last lines go to ours)."""
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        assert process.stdout is not None
        out = []
        for line in process.stdout:
            out.append(line)
            if lines is not None and line.strip():
                lines(line)
        stdout = "".join(out)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            lines = [line for line in errors.read().splitlines() if line.strip()]
            sys.stderr.write("".join(f"  | {line}\n" for line in lines[-15:]))
            raise RuntimeError(f"exit {process.returncode}: {lines[-1] if lines else 'no output'}")
    return stdout, usage.ru_maxrss * 1024


def token_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Each chat sample's length in tokens, as its chat template renders it."""
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def build_tokenizer() -> Any:
    """A word-level fast tokenizer over the benchmark's words, with ChatML's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    words = sorted({*WORDS, *(w.capitalize() for w in WORDS), *SYSTEM.replace(".", "").split()})
    vocab = {
        token: index for index, token in enumerate([*special, *words, "system", "user", "assistant", "."])
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML,
    )


def build_model(folder: Path, architecture: str, device: str) -> int:
    """A random-initialised model of the architecture with the benchmark's tokenizer, saved as a
    Hugging Face folder (bf16 on CUDA, fp32 on CPU); returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        **ARCHITECTURES[architecture],
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it trains: a 1B model's init on CPU takes minutes
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


@dataclasses.dataclass
class Case:
    """One training run: which trainer, on what, for how many steps."""

    trainer: Kind
    model: str
    dataset: str
    folder: str
    method: Literal["lora", "qlora", "full"] = "lora"
    activation_checkpointing: bool = False
    batch_size: int = 32
    """Samples per optimizer step."""
    micro_batch_size: int = 8
    """Samples per forward pass (TRL packed: the same number of tokens per forward)."""
    max_seq_len: int = 2048
    warmup_steps: int = 3
    steps: int = 10
    """Measured optimizer steps after the warm-up."""
    lora_rank: int = 16
    seed: int = 42


def run_cases(
    cases: list[Case], deadline: float | None = None, report: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """The cases in order in one process of their own (torch and transformers are imported once,
    seconds a case on a GPU machine), each result reported as it comes: its figures, or why it
    failed or was skipped. No case starts when the longest one so far would end past `deadline`
    (time.time()). When the process dies, the cases it did not report are failed with its error."""
    path = Path(cases[0].folder).parent / f"cases-{os.getpid()}-{time.monotonic_ns()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"deadline": deadline, "cases": [dataclasses.asdict(c) for c in cases]}))
    results: list[dict[str, Any]] = []

    def collect(line: str) -> None:
        if not line.startswith(RESULT):  # a library's own print (TRL's Trainer prints its logs)
            return
        results.append(json.loads(line.removeprefix(RESULT)))
        if report is not None:
            report(results[-1])

    try:
        _, rss = measured([sys.executable, __file__, "--worker", str(path)], lines=collect)
    except RuntimeError as error:
        results += [{"error": f"the worker died: {error}"} for _ in cases[len(results) :]]
        return results
    return [r | {"rss": rss} for r in results]


def _step_timer(warmup: int, steps: int, stop: bool) -> Any:
    """A TrainerCallback that records the time and the tokens seen at the end of every optimizer
    step (after the GPU finished it); with stop, it ends training after warmup + steps."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))
            if stop and state.global_step >= warmup + steps:
                control.should_training_stop = True
            return control

        def figures(self) -> dict[str, float]:
            if len(self.marks) < warmup + 2:
                raise RuntimeError(f"only {len(self.marks)} steps ran, fewer than the warm-up + 2")
            (start, before), (end, after) = self.marks[warmup - 1], self.marks[-1]
            return {
                "steps": len(self.marks) - warmup,
                "tokens": after - before,
                "seconds": end - start,
                "tokens_per_second": (after - before) / (end - start),
            }

    return StepTimer()


def _labtune(case: Case) -> Any:
    """labtune's phase training as `labtune train` runs it (same config model, data preparation,
    model loading and Trainer), with the step timer among its callbacks."""
    from labtune.contract.train import TrainConfig
    from labtune.trainer.dataset_reader import read_samples
    from labtune.trainer.modeling import load_tokenizer, phase_model
    from labtune.trainer.phases import train_phase
    from labtune.trainer.preemption import StopRequest
    from labtune.trainer.splits import prepare_phase_data, split_samples

    lora = {"rank": case.lora_rank, "alpha": 2.0 * case.lora_rank, "dropout": 0.0}
    config = TrainConfig.model_validate(
        {
            "metricsPort": 0,
            "output": str(Path(case.folder) / "out"),
            "baseModel": {"uri": case.model},
            "datasets": {"skills": case.dataset},
            "method": {"type": case.method, **({"lora": lora} if case.method != "full" else {})},
            "phases": [
                {
                    "name": "bench",
                    "dataset": "skills",
                    "learningRate": 1e-4,
                    "effectiveBatchSize": case.batch_size,
                    "maxSeqLen": case.max_seq_len,
                }
            ],
            "evaluation": {"heldOutFraction": 0.0},
            # One checkpoint, after the last (timed) step: train_phase reports from it.
            "checkpoints": {"everySteps": case.warmup_steps + case.steps},
            "microBatchSize": case.micro_batch_size,
            "activationCheckpointing": case.activation_checkpointing,
            "logging_steps": 1_000_000,
            "seed": case.seed,
        }
    )
    base = Path(case.model)
    tokenizer = load_tokenizer(base, None)
    samples = read_samples(Path(case.dataset))[: case.batch_size * (case.warmup_steps + case.steps)]
    phase = config.phases[0]
    data = prepare_phase_data(
        split_samples(samples, 0.0, case.seed), tokenizer, phase.max_seq_len, phase.name
    )
    model = phase_model(base, config.method, None)
    timer = _step_timer(case.warmup_steps, case.steps, stop=False)
    folder = Path(case.folder) / "phase"
    folder.mkdir(parents=True, exist_ok=True)
    train_phase(config, phase, data, model, tokenizer, folder, [timer], StopRequest(), world_size=1)
    return timer


def _trl(case: Case) -> Any:
    """TRL's SFTTrainer on the same data. trl-default: its defaults (pad each batch to its longest
    sample, loss on every token). trl-packed: its fastest configuration for this data, best-fit
    decreasing packing into rows of max_seq_len tokens, which makes its batches padding-free
    (position_ids per sample), with as many rows per forward pass as hold labtune's micro batch.
    Past its data a run goes on into the next epoch: it stops at max_steps."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    rows = [json.loads(line) for line in Path(case.dataset).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(case.model)
    packed = case.trainer == "trl-packed"
    per_forward = case.micro_batch_size
    if packed:
        lengths = token_lengths(tokenizer, rows)
        per_forward = max(1, round(case.micro_batch_size * (sum(lengths) / len(lengths)) / case.max_seq_len))
    model = AutoModelForCausalLM.from_pretrained(
        case.model, dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa"
    )
    config = SFTConfig(
        output_dir=str(Path(case.folder) / "out"),
        max_steps=case.warmup_steps + case.steps,
        per_device_train_batch_size=per_forward,
        gradient_accumulation_steps=max(1, case.batch_size // case.micro_batch_size),
        learning_rate=1e-4,
        max_length=case.max_seq_len,
        packing=packed,
        packing_strategy="bfd",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1_000_000,
        seed=case.seed,
        use_cpu=not cuda,
        bf16=cuda,
        gradient_checkpointing=case.activation_checkpointing,
        include_num_input_tokens_seen="non_padding",
    )
    lora = (
        None
        if case.method == "full"
        else LoraConfig(
            r=case.lora_rank, lora_alpha=2 * case.lora_rank, lora_dropout=0.0, target_modules="all-linear"
        )
    )
    timer = _step_timer(case.warmup_steps, case.steps, stop=True)
    dataset = datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.train()
    return timer


def _likelihood(case: Case) -> dict[str, float]:
    """`labtune evaluate`'s likelihood scorer on the model: the samples' tokens scored per second,
    `micro_batch_size` samples packed per forward pass, after one warm-up batch."""
    import torch

    from labtune.contract.records import Record
    from labtune.trainer.masking import tokenize_sample
    from labtune.trainer.modeling import load_model, load_tokenizer
    from labtune.trainer.scoring import answer_likelihoods

    tokenizer = load_tokenizer(Path(case.model), None)
    rows = Path(case.dataset).read_text().splitlines()[: case.batch_size * case.steps]
    samples = [tokenize_sample(Record.model_validate_json(row), tokenizer) for row in rows]
    model = load_model(Path(case.model)).to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    answer_likelihoods(model, samples[: case.micro_batch_size], case.micro_batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    answer_likelihoods(model, samples, case.micro_batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(len(s.input_ids) for s in samples)
    return {
        "examples": len(samples),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
    }


def _one(case: Case) -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if case.trainer == "likelihood":
        figures = _likelihood(case)
    else:
        figures = (_labtune(case) if case.trainer == "labtune" else _trl(case)).figures()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return figures | {"peak_gpu_memory": peak}


def worker(path: Path) -> None:
    """Runs the cases of a file written by run_cases, one JSON line each on stdout."""
    import gc

    import torch

    batch = json.loads(path.read_text())
    deadline, longest = batch["deadline"], 0.0
    for fields in batch["cases"]:
        case = Case(**fields)
        if deadline is not None and time.time() + longest > deadline:
            print(
                RESULT
                + json.dumps({"skipped": f"the time budget: the longest case so far took {longest:.0f} s"})
            )
            continue
        begun = time.monotonic()
        try:
            result = _one(case)
        except Exception as error:  # reported as the case's result; the next cases still run
            first = str(error).strip().splitlines()
            result = {"error": f"{type(error).__name__}: {first[0] if first else ''}"}
        result["wall_seconds"] = time.monotonic() - begun
        longest = max(longest, result["wall_seconds"])
        print(RESULT + json.dumps(result), flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", type=Path, required=True, help="a cases file written by run_cases()")
    worker(parser.parse_args().worker)
