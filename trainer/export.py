"""The job's outputs from the best checkpoint of the last phase: the adapter (LoRA, QLoRA), the
full model (full fine-tune) or the adapter merged into the base (when asked), each sealed with a
SHA256SUMS file and published with one rename."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from labtune.api.tuning_job_types import TuningOutput
from labtune.contract.train import TrainConfig
from labtune.trainer.digests import seal_folder
from labtune.trainer.layout import COMPLETE, Layout, publish
from labtune.trainer.modeling import merged_model

# What a Trainer checkpoint holds besides the model: needed to resume, not part of a result.
_TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")


def _is_training_state(name: str) -> bool:
    return name in _TRAINING_STATE or name == COMPLETE or name.startswith("rng_state")


def _copy_model_files(checkpoint: Path, destination: Path) -> None:
    destination.mkdir(parents=True)
    for path in checkpoint.iterdir():
        if _is_training_state(path.name):
            continue
        if path.is_dir():
            shutil.copytree(path, destination / path.name)
        else:
            shutil.copy2(path, destination / path.name)


def _publish_copy(checkpoint: Path, final: Path, layout: Layout) -> str:
    temporary = layout.temporary(final.name)
    _copy_model_files(checkpoint, temporary)
    digest = seal_folder(temporary)
    publish(temporary, final)
    return digest


def export_outputs(
    config: TrainConfig, layout: Layout, base: Path, best: Path, tokenizer: PreTrainedTokenizerBase
) -> TuningOutput:
    if config.method.type == "full":
        digest = _publish_copy(best, layout.model, layout)
        return TuningOutput(model=layout.uri_of(layout.model), model_sha256=digest)
    output = TuningOutput(
        adapter=layout.uri_of(layout.adapter), adapter_sha256=_publish_copy(best, layout.adapter, layout)
    )
    if config.merge_adapter:
        temporary = layout.temporary("model")
        merged_model(base, layout.adapter).save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        digest = seal_folder(temporary)
        publish(temporary, layout.model)
        output.model, output.model_sha256 = layout.uri_of(layout.model), digest
    return output
