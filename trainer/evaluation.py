"""`labtune evaluate`: every model on every benchmark, then the results and the summary.

Models over the same base (and chat template) share one loaded copy of it: their adapters are
loaded onto it side by side and each is scored with only it active, the base itself with the
adapters disabled. The results and the summary are written once every score is computed; a run
started again (after SIGTERM, exit 75) scores again from the start.

    <output>/results.jsonl   one line per benchmark, model and example (ExampleResult)
    <output>/summary.json    the summary (EvaluateSummary), as in the termination log but whole
    <output>/lm-eval/        the lm-evaluation-harness task of each multiple-choice benchmark
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from labtune.api.tuning_job_types import EvalScores
from labtune.contract import ConfigError, resolve_artifact
from labtune.contract.common import fit
from labtune.contract.evaluate import (
    BenchmarkScores,
    ChoiceExample,
    EvalExample,
    EvalModel,
    EvaluateConfig,
    EvaluateSummary,
    ExampleResult,
    Examples,
    LeafScores,
    MultipleChoiceBenchmark,
    ReferenceBenchmark,
)
from labtune.contract.records import Message, Record
from labtune.contract.train import ModelSource
from labtune.trainer.digests import file_sha256
from labtune.trainer.judge import grade
from labtune.trainer.layout import write_text_atomic
from labtune.trainer.masking import TokenizedSample, tokenize_sample
from labtune.trainer.modeling import (
    check_base_model,
    first_line,
    for_generation,
    load_model,
    load_tokenizer,
)
from labtune.trainer.multiple_choice import score_choices
from labtune.trainer.preemption import Preempted, StopRequest
from labtune.trainer.scoring import (
    Model,
    answer_likelihoods,
    contains,
    exact_match,
    greedy_answers,
    rouge_l,
)
from labtune.trainer.trainer_metrics import EvaluationMetrics

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"
"""peft's name for no adapter in a mixed-adapter batch."""
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
LM_EVAL = "lm-eval"
_DIGITS = 4  # decimals of the scores in the summary (results.jsonl has them unrounded)


@dataclass(frozen=True)
class _Group:
    """Models over one base: loaded once."""

    base: Path
    source: ModelSource
    models: list[EvalModel]


def _groups(config: EvaluateConfig) -> list[_Group]:
    groups: dict[tuple[Path, str | None], _Group] = {}
    for model in config.models:
        base = resolve_artifact(model.base.uri, config.artifact_root)
        key = (base.resolve(), model.base.chat_template)
        groups.setdefault(key, _Group(base, model.base, [])).models.append(model)
    return list(groups.values())


def messages(example: EvalExample, benchmark: ReferenceBenchmark) -> list[Message]:
    """The question as the training data asks it (the shipped pipelines' sample templates): the
    optional system prompt, then the grounded skill's context, a blank line and the question."""
    system = [Message(role="system", content=benchmark.system_prompt)] if benchmark.system_prompt else []
    question = f"{example.context}\n\n{example.question}" if example.context else example.question
    return [*system, Message(role="user", content=question)]


@dataclass(frozen=True)
class _Inputs:
    """A benchmark's examples tokenized for one tokenizer."""

    samples: list[TokenizedSample]
    """Question and reference answer, tokenized and masked as in training."""
    prompts: list[list[int]]
    """The question up to the assistant's header, for generation."""


def _inputs(
    benchmark: ReferenceBenchmark, examples: list[EvalExample], tokenizer: PreTrainedTokenizerBase
) -> _Inputs:
    samples, prompts = [], []
    for example in examples:
        asked = messages(example, benchmark)
        answered = Record(messages=[*asked, Message(role="assistant", content=example.answer)])
        try:
            samples.append(tokenize_sample(answered, tokenizer))
        except ConfigError as error:
            raise ConfigError(f"benchmark {benchmark.name} example {example.id}: {error}") from None
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in asked], tokenize=False, add_generation_prompt=True
        )
        assert isinstance(text, str)  # tokenize=False renders text
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return _Inputs(samples, prompts)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(config: EvaluateConfig, group: _Group) -> Model:
    """The group's base with every adapter of the group loaded onto it, on the device."""
    check_base_model(group.base, group.source.uri)
    model: Model = load_model(group.base)
    for eval_model in group.models:
        if eval_model.adapter is None:
            continue
        adapter = str(resolve_artifact(eval_model.adapter, config.artifact_root))
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(adapter, adapter_name=eval_model.name)
            else:
                model = PeftModel.from_pretrained(model, adapter, adapter_name=eval_model.name)
        except (OSError, ValueError, RuntimeError) as error:  # e.g. the shapes of another base
            if isinstance(error, torch.OutOfMemoryError):
                raise
            raise ConfigError(
                f"model {eval_model.name}: adapter {eval_model.adapter} cannot be loaded onto base model "
                f"{group.source.uri}: {first_line(error)}"
            ) from error
    model.to(_device())  # type: ignore[arg-type]  # transformers' wrapper hides nn.Module.to's signature
    model.eval()
    return model


@contextmanager
def _active(model: Model, eval_model: EvalModel) -> Iterator[Model]:
    """The loaded model as eval_model: with its adapter active, or as the base (adapters off)."""
    if not isinstance(model, PeftModel):
        yield model
    elif eval_model.adapter is None:
        with model.disable_adapter():
            yield model
    else:
        model.set_adapter(eval_model.name)
        yield model


def _score(
    model: Model,
    names: tuple[str, ReferenceBenchmark],
    examples: list[EvalExample],
    inputs: _Inputs,
    batch_size: int,
    progress: Callable[[int], None],
) -> list[ExampleResult]:
    """A reference benchmark's results for the model as it is active now, with the likelihood
    when the benchmark asks for it (generation comes later, see _generate)."""
    model_name, benchmark = names
    likelihoods = (
        answer_likelihoods(model, inputs.samples, batch_size, progress) if benchmark.likelihood else None
    )
    results = []
    for index, example in enumerate(examples):
        result = ExampleResult(
            benchmark=benchmark.name,
            model=model_name,
            id=example.id,
            leaf=example.leaf,
            leaf_type=example.leaf_type,
        )
        if likelihoods is not None:
            result.nll, result.answer_tokens = likelihoods[index].nll, likelihoods[index].tokens
        results.append(result)
    return results


def _generate(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    benchmark: tuple[ReferenceBenchmark, list[EvalExample], _Inputs],
    models: list[EvalModel],
    batch_size: int,
    progress: Callable[[int], None],
    results: list[list[ExampleResult]],
) -> None:
    """Every model's generated answers, compared with the references, into its results. Adapters
    over one base answer in the same batches (peft's mixed-adapter batches: each row with its own
    adapter, `__base__` for none): a decoding step of twice the rows costs a little more than one
    (SmolLM2-135M in bf16 on 2 CPU cores, 48 tokens: 5 questions 1.3 s, 10 1.5 s, 20 1.9 s)."""
    spec, examples, inputs = benchmark
    prompts = [prompt for _ in models for prompt in inputs.prompts]
    adapters = (
        [BASE_ADAPTER if m.adapter is None else m.name for m in models for _ in inputs.prompts]
        if isinstance(model, PeftModel)
        else None
    )
    answers = greedy_answers(
        model, tokenizer, prompts, spec.generation.max_new_tokens, batch_size, progress, adapters
    )
    for index, found in enumerate(results):
        mine = answers[index * len(examples) : (index + 1) * len(examples)]
        for result, answer, example in zip(found, mine, examples, strict=True):
            result.generated = answer
            result.exact_match = exact_match(answer, example.answer)
            result.contains = contains(answer, example.answer)
            result.rouge_l = rouge_l(answer, example.answer)


def _score_choices(
    model: Model,
    tokenizer: PreTrainedTokenizerBase,
    names: tuple[str, MultipleChoiceBenchmark],
    examples: list[ChoiceExample],
    config: EvaluateConfig,
    progress: Callable[[int], None],
) -> list[ExampleResult]:
    """lm-eval's verdict on each question, for the model as it is active now."""
    model_name, benchmark = names
    score = score_choices(
        model,
        tokenizer,
        resolve_artifact(benchmark.dataset, config.artifact_root),
        resolve_artifact(config.output, config.artifact_root) / LM_EVAL,
        name=benchmark.name.replace("-", "_"),
        batch_size=config.micro_batch_size,
    )
    progress(len(examples))
    return [
        ExampleResult(
            benchmark=benchmark.name,
            model=model_name,
            id=example.id,
            leaf=example.leaf,
            leaf_type=example.leaf_type,
            correct=correct,
            correct_norm=correct_norm,
        )
        for example, correct, correct_norm in zip(examples, score.correct, score.correct_norm, strict=True)
    ]


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(fmean(present), _DIGITS) if present else None


def scores(results: list[ExampleResult]) -> EvalScores:
    """The means over a set of results (booleans as fractions)."""

    def fraction(flag: bool | None) -> float | None:
        return None if flag is None else float(flag)

    return EvalScores(
        nll=_mean([r.nll for r in results]),
        exact_match=_mean([fraction(r.exact_match) for r in results]),
        contains=_mean([fraction(r.contains) for r in results]),
        rouge_l=_mean([r.rouge_l for r in results]),
        judge=_mean([r.judge for r in results]),
        accuracy=_mean([fraction(r.correct) for r in results]),
        accuracy_norm=_mean([fraction(r.correct_norm) for r in results]),
    )


def summarize(
    config: EvaluateConfig,
    examples: dict[str, Examples],
    results: dict[tuple[str, str], list[ExampleResult]],
) -> tuple[list[BenchmarkScores], list[LeafScores]]:
    """Per benchmark, and per benchmark and leaf, each model's scores."""
    benchmarks, leaves = [], []
    for benchmark in config.benchmarks:
        by_model = {m.name: results[(m.name, benchmark.name)] for m in config.models}
        leaf_types = {e.leaf: e.leaf_type for e in examples[benchmark.name]}
        benchmarks.append(
            BenchmarkScores(
                name=benchmark.name,
                examples=len(examples[benchmark.name]),
                leaves=len(leaf_types),
                models={name: scores(found) for name, found in by_model.items()},
            )
        )
        for leaf in sorted(leaf_types):
            of_leaf = {name: [r for r in found if r.leaf == leaf] for name, found in by_model.items()}
            leaves.append(
                LeafScores(
                    benchmark=benchmark.name,
                    leaf=leaf,
                    leaf_type=leaf_types[leaf],
                    examples=len(next(iter(of_leaf.values()))),
                    models={name: scores(found) for name, found in of_leaf.items()},
                )
            )
    return benchmarks, leaves


def _log_scores(model: str, benchmark: str, found: list[ExampleResult], seconds: float) -> None:
    score = scores(found)
    parts = [f"{len(found)} examples"]
    for label, value in (
        ("nll", score.nll),
        ("exact match", score.exact_match),
        ("contains", score.contains),
        ("ROUGE-L", score.rouge_l),
        ("accuracy", score.accuracy),
        ("normalised accuracy", score.accuracy_norm),
    ):
        if value is not None:
            parts.append(f"{label} {value:.4f}")
    log.info("model %s on %s: %s (%.1f s)", model, benchmark, ", ".join(parts), seconds)


def _passes(benchmark: ReferenceBenchmark | MultipleChoiceBenchmark) -> int:
    """How many times each example is scored per model (metrics' progress)."""
    if isinstance(benchmark, MultipleChoiceBenchmark):
        return 1
    return int(benchmark.likelihood) + int(benchmark.generation.enabled)


def evaluate(config: EvaluateConfig, examples: dict[str, Examples], stop: StopRequest) -> EvaluateSummary:
    """Scores every model on every benchmark (examples: each benchmark's, read and checked),
    writes results.jsonl and summary.json, and returns the summary; raises ConfigError on bad
    input and Preempted when stopped by a stop request (between batches)."""
    started = time.monotonic()
    passes = {b.name: _passes(b) for b in config.benchmarks}
    total = len(config.models) * sum(len(examples[name]) * count for name, count in passes.items())
    metrics = EvaluationMetrics(config.metrics_port, total)

    def progress(scored: int) -> None:
        metrics.add(scored)
        if stop.requested:
            raise Preempted("stopped between batches")

    results: dict[tuple[str, str], list[ExampleResult]] = {}
    try:
        for group in _groups(config):
            results |= _score_group(config, group, examples, progress)
            gc.collect()  # the group's model, before the next one loads
    finally:
        metrics.close()
    _judge(config, examples, results)
    return _write(config, examples, results, time.monotonic() - started)


def _judge(
    config: EvaluateConfig, examples: dict[str, Examples], results: dict[tuple[str, str], list[ExampleResult]]
) -> None:
    """Each judged benchmark's answers, every model's at once (the models are unloaded by now, so
    an in-process judge has the memory), graded by its judge; JudgeError when one fails."""
    for benchmark in config.benchmarks:
        if not isinstance(benchmark, ReferenceBenchmark) or benchmark.judge is None:
            continue
        began = time.monotonic()
        answered = [r for m in config.models for r in results[(m.name, benchmark.name)]]
        grade(
            benchmark.name,
            benchmark.judge,
            config.artifact_root,
            _references(examples[benchmark.name]),
            answered,
        )
        for model in config.models:
            rated = scores(results[(model.name, benchmark.name)]).judge
            log.info("judge of %s rates model %s %s", benchmark.name, model.name, rated)
        log.info("judge of %s: %d answers in %.1f s", benchmark.name, len(answered), time.monotonic() - began)


def _references(examples: Examples) -> list[EvalExample]:
    """A reference benchmark's examples (the reader gives it nothing else)."""
    return [example for example in examples if isinstance(example, EvalExample)]


def _choices(examples: Examples) -> list[ChoiceExample]:
    """A multiple-choice benchmark's examples (the reader gives it nothing else)."""
    return [example for example in examples if isinstance(example, ChoiceExample)]


def _score_group(
    config: EvaluateConfig,
    group: _Group,
    examples: dict[str, Examples],
    progress: Callable[[int], None],
) -> dict[tuple[str, str], list[ExampleResult]]:
    tokenizer = load_tokenizer(group.base, group.source.chat_template)
    inputs = {
        b.name: _inputs(b, _references(examples[b.name]), tokenizer)
        for b in config.benchmarks
        if isinstance(b, ReferenceBenchmark)
    }
    names = ", ".join(m.name for m in group.models)
    log.info("loading base model %s for %s", group.source.uri, names)
    model = _load(config, group)
    results: dict[tuple[str, str], list[ExampleResult]] = {}
    seconds: dict[tuple[str, str], float] = {}
    # Likelihoods and multiple choice first, in the compute dtype; then generation, for which the
    # model may be cast (for_generation) once nothing needs its full precision any more.
    for eval_model in group.models:
        with _active(model, eval_model) as active:
            for benchmark in config.benchmarks:
                began = time.monotonic()
                if isinstance(benchmark, MultipleChoiceBenchmark):
                    found = _score_choices(
                        active,
                        tokenizer,
                        (eval_model.name, benchmark),
                        _choices(examples[benchmark.name]),
                        config,
                        progress,
                    )
                else:
                    found = _score(
                        active,
                        (eval_model.name, benchmark),
                        _references(examples[benchmark.name]),
                        inputs[benchmark.name],
                        config.micro_batch_size,
                        progress,
                    )
                results[(eval_model.name, benchmark.name)] = found
                seconds[(eval_model.name, benchmark.name)] = time.monotonic() - began
    generated = [b for b in config.benchmarks if isinstance(b, ReferenceBenchmark) and b.generation.enabled]
    if generated:
        for_generation(model)
    for benchmark in generated:
        began = time.monotonic()
        _generate(
            model,
            tokenizer,
            (benchmark, _references(examples[benchmark.name]), inputs[benchmark.name]),
            group.models,
            config.generation_batch_size,
            progress,
            [results[(m.name, benchmark.name)] for m in group.models],
        )
        for eval_model in group.models:  # generated side by side: each model's share
            seconds[(eval_model.name, benchmark.name)] += (time.monotonic() - began) / len(group.models)
    for (model_name, benchmark_name), found in results.items():
        _log_scores(model_name, benchmark_name, found, seconds[(model_name, benchmark_name)])
    return results


def _write(
    config: EvaluateConfig,
    examples: dict[str, Examples],
    results: dict[tuple[str, str], list[ExampleResult]],
    seconds: float,
) -> EvaluateSummary:
    root = resolve_artifact(config.output, config.artifact_root)
    lines = [
        result.model_dump_json(by_alias=True, exclude_none=True)
        for benchmark in config.benchmarks
        for model in config.models
        for result in results[(model.name, benchmark.name)]
    ]
    write_text_atomic(root / RESULTS, "".join(f"{line}\n" for line in lines))
    benchmarks, leaves = summarize(config, examples, results)
    summary = EvaluateSummary(
        results=f"{config.output.rstrip('/')}/{RESULTS}",
        results_sha256=file_sha256(root / RESULTS),
        benchmarks=benchmarks,
        leaves=leaves,
        seconds=round(seconds, 1),
    )
    write_text_atomic(root / SUMMARY, summary.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    return summary


def termination_summaries(summary: EvaluateSummary) -> list[EvaluateSummary]:
    """What the termination log may hold, longest first: the summary with the per-leaf list cut
    until it fits the 4 KiB limit (each benchmark still counts its leaves), else only the results'
    URI and digest (as with many models times benchmarks); summary.json has everything."""
    shortest = summary.model_copy(update={"benchmarks": [], "leaves": []})
    try:
        return [fit(summary, ("leaves",)), shortest]
    except ValueError:
        return [shortest]
