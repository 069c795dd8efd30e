"""Loss masks token by token: every token's label is checked, grouped into runs of trained and
untrained tokens whose text is compared with the rendered conversation."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from labtune.api.synthetic_data_run_types import RaftSpec
from labtune.contract import ConfigError
from labtune.contract.records import Message, Record, SampleMetadata
from labtune.generator.mixing import raft, whole
from labtune.trainer.masking import IGNORE_INDEX, tokenize_sample

# SmolLM2's template: a default system prompt when the conversation has none.
DEFAULT_SYSTEM = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
)


def _sample(*turns: tuple[str, str], unmask: bool = False) -> Record:
    return Record(messages=[{"role": r, "content": c} for r, c in turns], unmask=unmask)  # type: ignore[misc]


def runs(sample: Record, tokenizer: Any) -> list[tuple[str, bool]]:
    """(text, trained) for each run of consecutive tokens with the same mask; also checks that
    every label is either the token itself or IGNORE_INDEX."""
    tokenized = tokenize_sample(sample, tokenizer)
    result: list[tuple[str, bool]] = []
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        assert label in (token, IGNORE_INDEX)
        text, trained = tokenizer.decode([token]), label != IGNORE_INDEX
        if result and result[-1][1] == trained:
            result[-1] = (result[-1][0] + text, trained)
        else:
            result.append((text, trained))
    return result


def test_only_assistant_content_and_its_end_of_turn_are_trained(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    sample = _sample(("system", "be brief"), ("user", "what is the capital?"), ("assistant", "paris is."))
    assert runs(sample, tiny_tokenizer) == [
        (
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nwhat is the capital?<|im_end|>\n"
            "<|im_start|>assistant\n",
            False,
        ),
        ("paris is.<|im_end|>", True),
        ("\n", False),
    ]


def test_every_assistant_turn_is_trained(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    sample = _sample(("user", "one"), ("assistant", "two"), ("user", "three"), ("assistant", "four"))
    assert runs(sample, tiny_tokenizer) == [
        ("<|im_start|>user\none<|im_end|>\n<|im_start|>assistant\n", False),
        ("two<|im_end|>", True),
        ("\n<|im_start|>user\nthree<|im_end|>\n<|im_start|>assistant\n", False),
        ("four<|im_end|>", True),
        ("\n", False),
    ]


def test_unmask_trains_every_message_but_the_system_prompt(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    sample = _sample(("system", "be brief"), ("user", "hello world"), ("assistant", "paris is."), unmask=True)
    assert runs(sample, tiny_tokenizer) == [
        ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n", False),
        ("hello world", True),
        ("<|im_end|>\n<|im_start|>assistant\n", False),
        ("paris is.<|im_end|>", True),
        ("\n", False),
    ]


def test_a_templates_default_system_prompt_is_not_trained(
    make_tokenizer: Callable[[str | None], PreTrainedTokenizerFast],
) -> None:
    sample = _sample(("user", "one"), ("assistant", "two"), unmask=True)
    assert runs(sample, make_tokenizer(DEFAULT_SYSTEM)) == [
        ("<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\n", False),
        ("one", True),
        ("<|im_end|>\n<|im_start|>assistant\n", False),
        ("two<|im_end|>", True),
        ("\n", False),
    ]


def test_labels_align_with_input_ids(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    sample = _sample(("user", "q"), ("assistant", "a"))
    tokenized = tokenize_sample(sample, tiny_tokenizer)
    assert len(tokenized.labels) == len(tokenized.input_ids)
    assert tiny_tokenizer.decode(tokenized.input_ids) == tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], tokenize=False
    )


def test_a_template_that_drops_a_message_is_a_config_error(
    make_tokenizer: Callable[[str | None], PreTrainedTokenizerFast],
) -> None:
    tokenizer = make_tokenizer("{% for m in messages if m.role != 'system' %}{{ m.content }}\n{% endfor %}")
    with pytest.raises(ConfigError, match="does not render every message's content verbatim"):
        tokenize_sample(_sample(("system", "s"), ("user", "q"), ("assistant", "a")), tokenizer)


def _generated(question: str, answer: str, chunk: str) -> Record:
    return Record(
        id="k",
        messages=[Message(role="user", content=question), Message(role="assistant", content=answer)],
        metadata=SampleMetadata(source="generated", leaf_type="knowledge", document=chunk),
    )


def test_lab_knowledge_samples_token_by_token(tiny_tokenizer: PreTrainedTokenizerFast) -> None:
    """What each sample type mixing makes trains: a knowledge sample whole (chunk, question and
    answer), a RAFT sample only its answer, with the distractors and the question untrained."""
    sample = _generated("who?", "ada.", "ada wrote it")
    assert runs(whole(sample), tiny_tokenizer) == [
        ("<|im_start|>user\n", False),
        ("ada wrote it\n\nwho?", True),
        ("<|im_end|>\n<|im_start|>assistant\n", False),
        ("ada.<|im_end|>", True),
        ("\n", False),
    ]
    with_golden = raft(
        sample, ["ada wrote it", "bob read it"], RaftSpec(documents=2, golden_probability=1.0), Random(0)
    )
    (context, trained), (answer, answer_trained), _ = runs(with_golden, tiny_tokenizer)
    assert not trained
    assert "Document:\nada wrote it\n\n" in context
    assert "Document:\nbob read it\n\n" in context
    assert context.endswith("\n\nwho?<|im_end|>\n<|im_start|>assistant\n")
    assert (answer, answer_trained) == ("ada.<|im_end|>", True)
    without = raft(
        sample, ["ada wrote it", "bob read it"], RaftSpec(documents=2, golden_probability=0.0), Random(0)
    )
    assert runs(without, tiny_tokenizer)[0] == (
        "<|im_start|>user\nDocument:\nbob read it\n\n\n\nwho?<|im_end|>\n<|im_start|>assistant\n",
        False,
    )
