"""A tiny random-weight Llama with a ChatML BPE tokenizer, built in the test session (no hub)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "what is the capital of france? paris is the capital.",
    "user assistant system hello world one two three four five",
    "tell me about tonsils. tonsils are in the throat.",
]


def build_tokenizer(chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = chat_template
    return fast


def build_model_folder(folder: Path, chat_template: str | None = CHATML) -> Path:
    tokenizer = build_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def make_tokenizer() -> Callable[[str | None], PreTrainedTokenizerFast]:
    """The tiny tokenizer with another chat template (None: without one)."""
    return build_tokenizer


@pytest.fixture(scope="session")
def make_model() -> Callable[..., Path]:
    """Builds a tiny model folder: make_model(folder, chat_template=None) for one without a template."""
    return build_model_folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder: random-weight 2-layer Llama and its tokenizer."""
    return build_model_folder(tmp_path_factory.mktemp("tiny-llama"))


def qa_record(question: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        **extra,
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """24 short question-answer records."""
    records = [qa_record(f"what is {n} plus one?", f"{n} plus one is {n + 1}.") for n in range(24)]
    return write_jsonl(tmp_path / "data.jsonl", records)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Writes a trainer config (YAML, camelCase) with small defaults, overridden by keyword."""

    def write(**overrides: Any) -> Path:
        config: dict[str, Any] = {
            "metricsPort": 0,
            "terminationLog": str(tmp_path / "termination-log"),
            "output": str(tmp_path / "out"),
            "microBatchSize": 4,
            "loggingSteps": 1,
            "checkpoints": {"everySteps": 2, "keep": 2},
            "evaluation": {"heldOutFraction": 0.25},
            "method": {"type": "lora", "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0}},
        }
        config |= overrides
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


CHOICE_QUESTIONS = [
    ("knowledge/geo/qna.yaml", "what is the capital of france?", ["paris", "the dog", "one two"], 0),
    ("knowledge/geo/qna.yaml", "where are the tonsils?", ["in the throat", "over the fox"], 0),
    ("knowledge/geo/qna.yaml", "what jumps over the lazy dog?", ["five", "the quick brown fox", "hello"], 1),
    ("compositional_skills/count/qna.yaml", "one two three", ["four", "world", "paris is"], 0),
    ("compositional_skills/count/qna.yaml", "say hello", ["world", "throat"], 0),
]
"""(leaf, question, choices, answer) of the multiple-choice tests, in the tiny model's words."""


@pytest.fixture
def choice_questions() -> list[tuple[str, str, list[str], int]]:
    return CHOICE_QUESTIONS


@pytest.fixture
def choices_dataset(tmp_path: Path) -> Path:
    """CHOICE_QUESTIONS as ChoiceExample lines, ids q0, q1, …"""
    from labtune.contract.evaluate import ChoiceExample

    lines = [
        ChoiceExample(id=f"q{i}", leaf=leaf, question=q, choices=c, answer=a).model_dump_json(by_alias=True)
        for i, (leaf, q, c, a) in enumerate(CHOICE_QUESTIONS)
    ]
    path = tmp_path / "choices.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
