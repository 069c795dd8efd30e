from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from labtune.contract import ConfigError
from labtune.contract.records import Record
from labtune.trainer.splits import prepare_phase_data, split_samples


def _samples(count: int, answer_words: int = 1) -> list[Record]:
    return [
        Record(
            messages=[
                {"role": "user", "content": f"q{n}"},
                {"role": "assistant", "content": "one " * answer_words},
            ]
        )  # type: ignore[list-item]
        for n in range(count)
    ]


def test_the_held_out_split_is_seeded_and_disjoint() -> None:
    samples = _samples(20)
    split = split_samples(samples, 0.25, seed=7)
    assert (len(split.train), len(split.held_out)) == (15, 5)
    assert split == split_samples(samples, 0.25, seed=7)
    assert split != split_samples(samples, 0.25, seed=8)
    assert {id(s) for s in split.train}.isdisjoint(id(s) for s in split.held_out)


@pytest.mark.parametrize(
    ("count", "fraction", "held_out"), [(10, 0.0, 0), (10, 0.01, 1), (2, 0.5, 1), (1, 0.5, 0)]
)
def test_a_nonzero_fraction_keeps_at_least_one_sample_each_side(
    count: int, fraction: float, held_out: int
) -> None:
    split = split_samples(_samples(count), fraction, seed=1)
    assert (len(split.train), len(split.held_out)) == (count - held_out, held_out)


def test_samples_over_the_max_sequence_length_are_dropped_and_counted(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    short, long = _samples(6), _samples(2, answer_words=40)
    split = split_samples(short + long, 0.25, seed=3)
    data = prepare_phase_data(split, tiny_tokenizer, max_seq_len=30, name="p")
    assert data.dropped == 2
    assert len(data.train) + len(data.held_out) == 6
    assert all(len(t.input_ids) <= 30 for t in data.train + data.held_out)


def test_a_phase_with_every_sample_too_long_is_a_config_error(
    tiny_tokenizer: PreTrainedTokenizerFast,
) -> None:
    split = split_samples(_samples(4, answer_words=40), 0.0, seed=3)
    with pytest.raises(ConfigError, match="phase p: every training sample is longer than maxSeqLen 16"):
        prepare_phase_data(split, tiny_tokenizer, max_seq_len=16, name="p")
