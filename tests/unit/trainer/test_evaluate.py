"""`labtune evaluate`: the scorers on fixed inputs (the likelihood on a random-weight tiny Llama
against a hand computation), a run scoring a base and an adapter over it in one process, and bad
input (exit 78, one line, found before torch is imported)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from labtune.api.tuning_job_types import EvalScores
from labtune.contract import EXIT_CONFIG_ERROR, EXIT_PREEMPTED, SUMMARY_LIMIT_BYTES, write_summary
from labtune.contract.evaluate import (
    BenchmarkScores,
    EvalExample,
    EvaluateSummary,
    ExampleResult,
    LeafScores,
    ReferenceBenchmark,
)
from labtune.contract.records import Message, Record
from labtune.trainer.evaluation import messages, termination_summaries
from labtune.trainer.judge import rating
from labtune.trainer.launcher import STOP_FILE_ENV
from labtune.trainer.masking import IGNORE_INDEX, tokenize_sample
from labtune.trainer.multiple_choice import score_choices
from labtune.trainer.scoring import answer_likelihoods, contains, exact_match, greedy_answers, rouge_l
from labtune.trainer.trainer_cli import run_evaluation
from labtune.trainer.trainer_metrics import EvaluationMetrics
from labtune_dev.openai_server import serve

LABTUNE = str(Path(sys.executable).parent / "labtune")

QUESTIONS = [
    ("what is the capital of france?", "paris is the capital."),
    ("tell me about tonsils.", "tonsils are in the throat."),
    ("hello", "one two three four five"),
]


def _load(folder: Path) -> LlamaForCausalLM:
    model: LlamaForCausalLM = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def _sample(question: str, answer: str) -> Record:
    return Record(
        messages=[Message(role="user", content=question), Message(role="assistant", content=answer)]
    )


# --- the likelihood ---------------------------------------------------------------------------


def test_the_likelihood_is_the_mean_nll_of_the_answer_tokens_by_hand(
    tiny_model: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    model = _load(tiny_model)
    samples = [tokenize_sample(_sample(q, a), tiny_tokenizer) for q, a in QUESTIONS]
    found = answer_likelihoods(model, samples, batch_size=2)  # two packed into one row, then one
    for sample, likelihood, (_, answer) in zip(samples, found, QUESTIONS, strict=True):
        positions = [t for t, label in enumerate(sample.labels) if label != IGNORE_INDEX]
        # The answer as training learns it: its content and the end of the turn.
        assert tiny_tokenizer.decode([sample.input_ids[t] for t in positions]) == f"{answer}<|im_end|>"
        with torch.no_grad():
            logits = model(torch.tensor([sample.input_ids])).logits[0]  # the sample alone, unpacked
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        expected = -sum(float(log_probs[t - 1, sample.input_ids[t]]) for t in positions) / len(positions)
        assert likelihood.tokens == len(positions)
        assert likelihood.nll == pytest.approx(expected, rel=1e-5)


# --- comparing answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("Paris", "paris", True),
        ("  The capital is  Paris!", "the capital is paris", True),  # case, punctuation, spacing
        ("\uff30\uff41\uff52\uff49\uff53", "Paris", True),  # NFKC: full-width letters
        ("東京", "東京", True),  # letters beyond ASCII are words too
        ("Paris, France", "Paris", False),
        ("", "Paris", False),
        ("?", "?", True),  # a reference without words: the stripped texts
        ("!", "?", False),
    ],
)
def test_exact_match(answer: str, reference: str, expected: bool) -> None:
    assert exact_match(answer, reference) is expected


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("The capital of France is Paris.", "paris", True),
        ("Parisian food", "Paris", False),  # whole words only
        ("Paris is in France", "Paris France", False),  # next to each other
        ("It lies in France, Paris.", "France Paris", True),
        ("Paris", "Paris is the capital", False),
        ("", "Paris", False),
        ("what?", "?", True),
    ],
)
def test_contains(answer: str, reference: str, expected: bool) -> None:
    assert contains(answer, reference) is expected


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on the mat", 1.0),
        ("the cat on the mat", "the cat sat on the mat", 10 / 11),  # LCS 5: P 5/5, R 5/6
        ("the mat on the cat", "the cat sat on the mat", 2 * (3 / 5) * (3 / 6) / (3 / 5 + 3 / 6)),
        ("PARIS!", "paris", 1.0),
        ("東京 です", "東京", 2 / 3),  # rouge-score's own tokenizer drops non-ASCII words: 0
        ("Berlin", "Paris", 0.0),
        ("", "Paris", 0.0),
        ("...", "?", 0.0),
    ],
)
def test_rouge_l(answer: str, reference: str, expected: float) -> None:
    assert rouge_l(answer, reference) == pytest.approx(expected)


def test_a_grounded_question_comes_after_its_context_and_the_system_prompt_first() -> None:
    example = EvalExample(
        id="g1",
        leaf="skills/g/qna.yaml",
        leaf_type="grounded_skill",
        question="Q?",
        answer="A.",
        context="C.",
    )
    benchmark = ReferenceBenchmark(type="reference", name="held-out", dataset="d", system_prompt="Be brief.")
    assert [(m.role, m.content) for m in messages(example, benchmark)] == [
        ("system", "Be brief."),
        ("user", "C.\n\nQ?"),
    ]


def _prompts(tokenizer: PreTrainedTokenizerFast) -> list[list[int]]:
    prompts = []
    for question, _ in QUESTIONS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompts


def test_greedy_answers_of_a_padded_batch_are_those_of_each_prompt_alone(
    tiny_model: Path, tiny_tokenizer: PreTrainedTokenizerFast
) -> None:
    model = _load(tiny_model)
    prompts = _prompts(tiny_tokenizer)
    together = greedy_answers(model, tiny_tokenizer, prompts, max_new_tokens=6, batch_size=3)
    alone = [greedy_answers(model, tiny_tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert together == alone
    assert all("<|im" not in answer for answer in together)


def test_adapters_answering_in_one_batch_answer_as_each_does_alone(
    tiny_model: Path, tiny_tokenizer: PreTrainedTokenizerFast, adapter: Path
) -> None:
    """peft's mixed-adapter batches: the base (`__base__`) and two adapters in the same rows."""
    model = PeftModel.from_pretrained(_load(tiny_model), str(adapter), adapter_name="one")
    torch.manual_seed(1)
    other = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model.add_adapter("two", other)
    prompts = _prompts(tiny_tokenizer)
    names = ["__base__", "one", "two"]
    mixed = greedy_answers(
        model,
        tiny_tokenizer,
        prompts * 3,
        max_new_tokens=6,
        batch_size=4,  # batches that straddle the models
        adapters=[name for name in names for _ in prompts],
    )
    alone = {}
    for name in names:
        model.set_adapter("one" if name == "__base__" else name)
        if name == "__base__":
            with model.disable_adapter():
                alone[name] = greedy_answers(model, tiny_tokenizer, prompts, max_new_tokens=6, batch_size=4)
        else:
            alone[name] = greedy_answers(model, tiny_tokenizer, prompts, max_new_tokens=6, batch_size=4)
    assert mixed == [answer for name in names for answer in alone[name]]
    assert len({tuple(answers) for answers in alone.values()}) == 3  # three different models


# --- a run ------------------------------------------------------------------------------------


def _examples() -> list[dict[str, Any]]:
    rows = [
        ("k1", "knowledge/geo/qna.yaml", "knowledge", "what is the capital of france?", "paris.", None),
        ("k2", "knowledge/geo/qna.yaml", "knowledge", "hello", "one two three", None),
        ("k3", "knowledge/body/qna.yaml", "knowledge", "tell me about tonsils.", "in the throat.", None),
        ("g1", "skills/ground/qna.yaml", "grounded_skill", "what jumps?", "the fox.", "the quick brown fox"),
    ]
    return [
        {"id": i, "leaf": leaf, "leafType": kind, "question": q, "answer": a}
        | ({"context": context} if context else {})
        for i, leaf, kind, q, a, context in rows
    ]


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter over the tiny model, with random (not zero) weights: it changes the outputs."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(_load(tiny_model), config).save_pretrained(folder)
    return folder


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "evaluation.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in _examples()))
    return path


@pytest.fixture
def evaluate_config(tmp_path: Path, tiny_model: Path, adapter: Path, dataset: Path) -> Callable[..., Path]:
    """Writes an evaluation config (YAML, camelCase): the base and the adapter over it, one benchmark."""

    def write(**overrides: Any) -> Path:
        config: dict[str, Any] = {
            "metricsPort": 0,
            "terminationLog": str(tmp_path / "termination-log"),
            "output": str(tmp_path / "out"),
            "microBatchSize": 3,
            "models": [
                {"name": "base", "base": {"uri": str(tiny_model)}},
                {"name": "tuned", "base": {"uri": str(tiny_model)}, "adapter": str(adapter)},
            ],
            "benchmarks": [
                {
                    "type": "reference",
                    "name": "held-out",
                    "dataset": str(dataset),
                    "generation": {"maxNewTokens": 4},
                }
            ],
        } | overrides
        path = tmp_path / "evaluate.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def _results(out: Path) -> list[ExampleResult]:
    return [
        ExampleResult.model_validate_json(line) for line in (out / "results.jsonl").read_text().splitlines()
    ]


def test_a_base_and_an_adapter_over_it_are_scored_in_one_run(
    tmp_path: Path,
    evaluate_config: Callable[..., Path],
    tiny_model: Path,
    tiny_tokenizer: PreTrainedTokenizerFast,
    adapter: Path,
) -> None:
    # A second adapter over the same base (here the same files): loaded beside the first one.
    models = yaml.safe_load(evaluate_config().read_text())["models"]
    models.append(models[1] | {"name": "again"})
    assert run_evaluation(evaluate_config(models=models)) == 0
    results = _results(tmp_path / "out")
    names = ("base", "tuned", "again")
    assert [(r.model, r.id) for r in results] == [(m, e["id"]) for m in names for e in _examples()]

    # Each as if loaded alone: the base (scored with the adapter disabled) and the adapter over it.
    benchmark = ReferenceBenchmark(type="reference", name="held-out", dataset="")
    samples = []
    for example in map(EvalExample.model_validate, _examples()):
        answered = [*messages(example, benchmark), Message(role="assistant", content=example.answer)]
        samples.append(tokenize_sample(Record(messages=answered), tiny_tokenizer))
    tuned = answer_likelihoods(PeftModel.from_pretrained(_load(tiny_model), str(adapter)), samples, 1)
    alone = {"base": answer_likelihoods(_load(tiny_model), samples, 1), "tuned": tuned, "again": tuned}
    ids = [e["id"] for e in _examples()]
    answers = {e["id"]: e["answer"] for e in _examples()}
    for result in results:
        expected = alone[result.model][ids.index(result.id)]
        assert result.nll == pytest.approx(expected.nll, rel=1e-5)
        assert result.answer_tokens == expected.tokens
        assert result.generated is not None
        assert result.exact_match == exact_match(result.generated, answers[result.id])
        assert result.contains == contains(result.generated, answers[result.id])
        assert result.rouge_l == rouge_l(result.generated, answers[result.id])
    assert alone["base"] != alone["tuned"]  # the adapter changes the model

    summary = EvaluateSummary.model_validate_json((tmp_path / "out" / "summary.json").read_text())
    assert summary.results == f"{tmp_path}/out/results.jsonl"
    assert [(b.name, b.examples, b.leaves, list(b.models)) for b in summary.benchmarks] == [
        ("held-out", 4, 3, ["base", "tuned", "again"])
    ]
    mean_nll = sum(r.nll or 0.0 for r in results if r.model == "tuned") / 4
    assert summary.benchmarks[0].models["tuned"].nll == pytest.approx(mean_nll, abs=1e-4)
    assert [(leaf.leaf, leaf.leaf_type, leaf.examples) for leaf in summary.leaves] == [
        ("knowledge/body/qna.yaml", "knowledge", 1),
        ("knowledge/geo/qna.yaml", "knowledge", 2),
        ("skills/ground/qna.yaml", "grounded_skill", 1),
    ]
    geo = [r for r in results if r.model == "base" and r.leaf == "knowledge/geo/qna.yaml"]
    assert summary.leaves[1].models["base"].rouge_l == pytest.approx(
        sum(r.rouge_l or 0.0 for r in geo) / 2, abs=1e-4
    )
    assert EvaluateSummary.model_validate_json((tmp_path / "termination-log").read_text()) == summary


def test_multiple_choice_is_scored_by_lm_eval_for_each_model_beside_the_reference_questions(
    tmp_path: Path,
    evaluate_config: Callable[..., Path],
    dataset: Path,
    tiny_model: Path,
    tiny_tokenizer: PreTrainedTokenizerFast,
    adapter: Path,
    choices_dataset: Path,
) -> None:
    choices = choices_dataset
    benchmarks = [
        {"type": "reference", "name": "held-out", "dataset": str(dataset), "generation": {"enabled": False}},
        {"type": "multipleChoice", "name": "mcq", "dataset": str(choices)},
    ]
    assert run_evaluation(evaluate_config(benchmarks=benchmarks)) == 0
    results = [r for r in _results(tmp_path / "out") if r.benchmark == "mcq"]
    assert [(r.model, r.id) for r in results] == [(m, f"q{i}") for m in ("base", "tuned") for i in range(5)]
    # Each model's verdicts are lm-eval's on that model loaded alone.
    alone = {
        "base": _load(tiny_model),
        "tuned": PeftModel.from_pretrained(_load(tiny_model), str(adapter)),
    }
    for name, model in alone.items():
        expected = score_choices(model, tiny_tokenizer, choices, tmp_path / f"alone-{name}", name=name)
        found = [r for r in results if r.model == name]
        assert [r.correct for r in found] == expected.correct
        assert [r.correct_norm for r in found] == expected.correct_norm
        assert all(r.nll is None for r in found)
    summary = EvaluateSummary.model_validate_json((tmp_path / "termination-log").read_text())
    by_name = {b.name: b for b in summary.benchmarks}
    assert (by_name["mcq"].examples, by_name["mcq"].leaves) == (5, 2)
    for name in alone:
        scores = by_name["mcq"].models[name]
        hits = [r.correct for r in results if r.model == name]
        assert scores.accuracy == pytest.approx(sum(map(bool, hits)) / 5, abs=1e-4)
        assert scores.nll is None
        assert by_name["held-out"].models[name].accuracy is None
    task = tmp_path / "out" / "lm-eval" / "labtune_mcq_mcq.yaml"
    assert yaml.safe_load(task.read_text())["dataset_kwargs"]["data_files"]["test"] == str(choices)


# --- the judge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Close to the reference. Rating: [[7]]", 7.0),
        ("First [[3]], on reflection Rating: [[8]]", 8.0),
        ("Rating: [[ 6.5 ]]", 6.5),
        ("Rating: [[11]]", None),
        ("Rating: [[0]]", None),
        ("I rate it 7/10", None),
        ("", None),
        (None, None),
    ],
)
def test_the_rating_is_the_last_one_in_the_asked_form_from_1_to_10(
    reply: str | None, expected: float | None
) -> None:
    assert rating(reply) == expected


def _judge_reply(prompt: str) -> str:
    """A judge that rates an answer 9 when it says the reference's first word, else 2, and says
    nothing usable about the question on tonsils."""
    question = prompt.split("[Question]\n", 1)[1].split("\n\n[Reference answer]", 1)[0]
    reference = prompt.split("[Reference answer]\n", 1)[1].split("\n", 1)[0]
    answer = prompt.split("[Assistant's answer]\n", 1)[1]
    if "tonsils" in question:  # not in the answer: the tiny model may say any word of the questions
        return "I cannot tell."
    return f"Compared. Rating: [[{9 if reference.split()[0] in answer else 2}]]"


def test_a_judge_rates_every_generated_answer_with_the_key_and_the_concurrency_asked(
    tmp_path: Path, evaluate_config: Callable[..., Path], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDGE_KEY", "s3cret")
    with serve(reply=_judge_reply) as (url, script):
        script.delay = 0.05
        teacher = {"model": "judge", "url": url, "apiKeyEnv": "JUDGE_KEY", "maxConcurrency": 2}
        benchmark = {
            "type": "reference",
            "name": "held-out",
            "dataset": str(dataset),
            "generation": {"maxNewTokens": 4},
            "judge": {"teacher": teacher},
        }
        assert run_evaluation(evaluate_config(benchmarks=[benchmark])) == 0
    results = _results(tmp_path / "out")
    assert len(script.calls) == len(results) == 2 * 4  # every model's answers, one request each
    assert 1 < script.max_in_flight <= 2
    assert {auth for _, _, auth in script.calls} == {"Bearer s3cret"}
    prompts = [body["messages"][-1]["content"] for _, body, _ in script.calls]
    questions = {e["id"]: e["question"] for e in _examples()}
    for result in results:
        answered = f"[Assistant's answer]\n{result.generated or '(no answer)'}"
        asked = next(p for p in prompts if answered in p and f"{questions[result.id]}\n\n[Reference" in p)
        assert result.judge == (None if result.id == "k3" else float(_judge_reply(asked)[-3]))
    summary = EvaluateSummary.model_validate_json((tmp_path / "termination-log").read_text())
    for name, scores in summary.benchmarks[0].models.items():
        rated = [r.judge for r in results if r.model == name and r.judge is not None]
        assert len(rated) == 3  # the tonsils answer is unrated, not a 0
        assert scores.judge == pytest.approx(sum(rated) / 3, abs=1e-4)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            lambda prompt: "A fine answer, I would say.",
            "labtune evaluate: judge judge of benchmark held-out gave no rating in the form 'Rating: "
            "[[N]]' (N from 1 to 10) for any of 8 answers; first reply: 'A fine answer, I would say.'",
        ),
        (lambda prompt: "Rating: [[42]]", "first reply: 'Rating: [[42]]'"),
    ],
)
def test_a_judge_that_rates_nothing_is_one_line_and_exit_1(
    tmp_path: Path,
    evaluate_config: Callable[..., Path],
    dataset: Path,
    reply: Callable[[str], str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve(reply=reply) as (url, _):
        judge = {"teacher": {"model": "judge", "url": url, "apiKeyEnv": None}}
        benchmark = {"type": "reference", "name": "held-out", "dataset": str(dataset), "judge": judge}
        assert (
            run_evaluation(evaluate_config(benchmarks=[benchmark | {"generation": {"maxNewTokens": 2}}])) == 1
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]
    assert not (tmp_path / "termination-log").exists()


def test_an_unreachable_judge_is_one_line_and_exit_1(
    evaluate_config: Callable[..., Path], dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = {"model": "judge", "url": "http://127.0.0.1:9/v1", "maxRetries": 0, "apiKeyEnv": None}
    benchmark = {
        "type": "reference",
        "name": "held-out",
        "dataset": str(dataset),
        "judge": {"teacher": teacher},
    }
    assert run_evaluation(evaluate_config(benchmarks=[benchmark | {"generation": {"maxNewTokens": 2}}])) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("labtune evaluate: judge of benchmark held-out: ")


def test_likelihood_only_leaves_out_the_generation_scores(
    tmp_path: Path, evaluate_config: Callable[..., Path], dataset: Path
) -> None:
    benchmark = {
        "type": "reference",
        "name": "nll",
        "dataset": str(dataset),
        "generation": {"enabled": False},
    }
    assert run_evaluation(evaluate_config(benchmarks=[benchmark])) == 0
    result = _results(tmp_path / "out")[0]
    assert result.nll is not None
    assert (result.generated, result.exact_match, result.contains, result.rouge_l) == (None, None, None, None)
    scores = json.loads((tmp_path / "termination-log").read_text())["benchmarks"][0]["models"]["base"]
    assert list(scores) == ["nll"]


def test_a_stop_request_exits_75_between_batches_and_writes_nothing(
    tmp_path: Path, evaluate_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = tmp_path / "stop"
    stop.touch()
    monkeypatch.setenv(STOP_FILE_ENV, str(stop))  # as the launcher relays SIGTERM
    assert run_evaluation(evaluate_config()) == EXIT_PREEMPTED
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "termination-log").exists()


def test_the_progress_gauges() -> None:
    metrics = EvaluationMetrics(0, total=8)
    metrics.add(3)
    values = {sample.name: sample.value for family in metrics.registry.collect() for sample in family.samples}
    assert (
        values["labtune_evaluate_scored"],
        values["labtune_evaluate_total"],
        values["labtune_evaluate_progress_ratio"],
    ) == (
        3,
        8,
        3 / 8,
    )


def test_the_termination_log_drops_leaves_until_it_fits(tmp_path: Path) -> None:
    scores = {
        name: EvalScores(nll=1.2345, exact_match=0.5, contains=0.75, rouge_l=0.6789)
        for name in ("base", "tuned")
    }
    leaves = [
        LeafScores(
            benchmark="held-out",
            leaf=f"knowledge/leaf{n}/qna.yaml",
            leaf_type="knowledge",
            examples=3,
            models=scores,
        )
        for n in range(200)
    ]
    summary = EvaluateSummary(
        results="pvc://claim/eval/results.jsonl",
        results_sha256="0" * 64,
        benchmarks=[BenchmarkScores(name="held-out", examples=600, leaves=200, models=scores)],
        leaves=leaves,
        seconds=12.5,
    )
    fitted = termination_summaries(summary)[0]
    write_summary(fitted, tmp_path / "log")  # raises when over the limit
    assert len((tmp_path / "log").read_bytes()) <= SUMMARY_LIMIT_BYTES
    assert fitted.benchmarks == summary.benchmarks
    assert 0 < len(fitted.leaves) < 200
    assert fitted.leaves == leaves[: len(fitted.leaves)]

    many = summary.model_copy(update={"benchmarks": summary.benchmarks * 40, "leaves": []})
    (shortest,) = termination_summaries(many)
    assert (shortest.benchmarks, shortest.leaves, shortest.results) == ([], [], summary.results)


# --- bad input ----------------------------------------------------------------------------------


def _evaluate(config: Path, env: dict[str, str]) -> str:
    """Runs `labtune evaluate`; the one line it printed, having exited with the config error code."""
    result = subprocess.run(
        [LABTUNE, "evaluate", "--config", str(config)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _lines(path: Path, *lines: str) -> dict[str, Any]:
    path.write_text("".join(f"{line}\n" for line in lines))
    return {"type": "reference", "name": "held-out", "dataset": str(path)}


ONE_CHOICE = '{"id": "a", "leaf": "l", "question": "q", "choices": ["x"]}'
K1 = json.dumps(
    {"id": "a", "leaf": "knowledge/x/qna.yaml", "leafType": "knowledge", "question": "q?", "answer": "a."}
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda tmp: {"models": [{"name": "base", "base": {"uri": f"{tmp}/no-model"}}]},
            "model base: base model {tmp}/no-model does not exist",
        ),
        (
            lambda tmp: {
                "models": [{"name": "t", "base": {"uri": str(tmp)}, "adapter": f"{tmp}/no-adapter"}]
            },
            "model t: adapter {tmp}/no-adapter does not exist",
        ),
        (
            lambda tmp: {"models": [{"name": "t", "base": {"uri": str(tmp)}, "adapter": str(tmp)}]},
            "model t: adapter {tmp} is not an adapter: expected a folder with adapter_config.json",
        ),
        (
            lambda tmp: {"benchmarks": [{"type": "reference", "name": "b", "dataset": f"{tmp}/no.jsonl"}]},
            "dataset {tmp}/no.jsonl: No such file or directory",
        ),
        (lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl")]}, "dataset {tmp}/e.jsonl has no examples"),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl", "", "  ")]},
            "dataset {tmp}/e.jsonl has no examples",
        ),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl", K1, "{not json")]},
            "dataset {tmp}/e.jsonl line 2: not JSON: Expecting property name enclosed in double quotes",
        ),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl", K1, K1.replace(', "answer": "a."', ""))]},
            "dataset {tmp}/e.jsonl line 2: answer: Field required",
        ),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl", K1.replace('"a."', '""'))]},
            "dataset {tmp}/e.jsonl line 1: answer: String should have at least 1 character",
        ),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl", K1.replace('"knowledge"', '"skill"'))]},
            "dataset {tmp}/e.jsonl line 1: leafType: Input should be 'knowledge', 'freeform_skill' or "
            "'grounded_skill'",
        ),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "e.jsonl", K1, "", K1)]},
            "dataset {tmp}/e.jsonl line 3: id 'a' repeats line 1",
        ),
        (
            lambda tmp: {
                "benchmarks": [{"type": "multipleChoice", "name": "m", "dataset": f"{tmp}/no.jsonl"}]
            },
            "dataset {tmp}/no.jsonl: No such file or directory",
        ),
        (
            lambda tmp: {"benchmarks": [_lines(tmp / "c.jsonl", ONE_CHOICE) | {"type": "multipleChoice"}]},
            "dataset {tmp}/c.jsonl line 1: choices: List should have at least 2 items after "
            "validation, not 1",
        ),
        (lambda tmp: {"output": f"{tmp}/file"}, "output {tmp}/file is a file, not a folder"),
        (
            lambda tmp: {"terminationLog": str(tmp)},
            "termination log {tmp} cannot be written: it is a folder: set terminationLog to a writable file",
        ),
    ],
    ids=[
        "no base model",
        "no adapter",
        "not an adapter",
        "no dataset",
        "empty dataset",
        "blank lines only",
        "a line not JSON",
        "a question without an answer",
        "an empty answer",
        "a wrong leaf type",
        "an id twice",
        "no multiple-choice dataset",
        "a multiple-choice question with one choice and no answer",
        "output is a file",
        "termination log a folder",
    ],
)
def test_bad_input_is_one_line_before_torch_is_imported(
    tmp_path: Path,
    evaluate_config: Callable[..., Path],
    without_torch: dict[str, str],
    change: Callable[[Path], dict[str, Any]],
    message: str,
) -> None:
    (tmp_path / "file").write_text("x")
    config = evaluate_config(**change(tmp_path))
    assert _evaluate(config, without_torch) == "labtune evaluate: " + message.format(tmp=tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda c: {"benchmarks": [c["benchmarks"][0] | {"type": None}]},
            "benchmarks.0: set type to reference or multipleChoice",
        ),
        (
            lambda c: {"benchmarks": [{k: v for k, v in c["benchmarks"][0].items() if k != "type"}]},
            "benchmarks.0: set type to reference or multipleChoice",
        ),
        (
            lambda c: {"models": [c["models"][0], c["models"][0]]},
            "(root): Value error, model names must be unique, got ['base', 'base']",
        ),
        (
            lambda c: {
                "benchmarks": [c["benchmarks"][0] | {"likelihood": False, "generation": {"enabled": False}}]
            },
            "benchmarks.0.reference: Value error, benchmark held-out scores nothing: enable likelihood or "
            "generation",
        ),
        (
            lambda c: {"models": [c["models"][0] | {"name": "Base"}]},
            "models.0.name: String should match pattern",
        ),
        (lambda c: {"models": []}, "models: List should have at least 1 item after validation, not 0"),
    ],
    ids=["a wrong type", "no type", "a model twice", "nothing scored", "a bad name", "no model"],
)
def test_an_invalid_config_is_one_line(
    tmp_path: Path,
    evaluate_config: Callable[..., Path],
    without_torch: dict[str, str],
    change: Callable[[dict[str, Any]], dict[str, Any]],
    problem: str,
) -> None:
    config = evaluate_config()
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(data | change(data)))
    line = _evaluate(config, without_torch)
    assert line.startswith(f"labtune evaluate: config {config} is invalid: {problem}")


def test_an_adapter_of_another_base_is_one_line_and_writes_nothing(
    tmp_path: Path,
    evaluate_config: Callable[..., Path],
    tiny_tokenizer: PreTrainedTokenizerFast,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wider = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    get_peft_model(LlamaForCausalLM(wider), config).save_pretrained(tmp_path / "other")
    models = yaml.safe_load(evaluate_config().read_text())["models"]
    models[1]["adapter"] = str(tmp_path / "other")
    assert run_evaluation(evaluate_config(models=models)) == EXIT_CONFIG_ERROR
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("labtune evaluate:")]
    assert line.startswith(
        f"labtune evaluate: model tuned: adapter {tmp_path}/other cannot be loaded onto base model "
    )
    assert not (tmp_path / "out").exists()
