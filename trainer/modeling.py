"""Loading the base model and tokenizer (a Hugging Face folder or a GGUF file), and putting the
tuning method on it.

Phase chaining: a phase starts from the best checkpoint of the phase before. For LoRA/QLoRA the
same adapter keeps training (loaded trainable onto a fresh copy of the base), so the job's result
is one adapter over the original base, whatever the number of phases; for a full fine-tune the
phase loads the previous phase's weights. Optimizer and schedule start fresh in each phase, with
that phase's learning rate and warm-up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from labtune.api.tuning_job_types import LoraSpec, MethodSpec
from labtune.contract import ConfigError

GGUF_MAGIC = b"GGUF"
ALL_LINEAR = "all-linear"


def check_base_model(path: Path, uri: str) -> None:
    """A ConfigError unless path is a Hugging Face model folder or a GGUF file."""
    if path.is_dir() and (path / "config.json").is_file():
        return
    if path.is_file() and path.suffix == ".gguf":
        with path.open("rb") as file:
            if file.read(len(GGUF_MAGIC)) == GGUF_MAGIC:
                return
    raise ConfigError(
        f"base model {uri} is not a model: expected a Hugging Face folder with config.json or a .gguf file"
    )


def _source(path: Path) -> tuple[str, dict[str, Any]]:
    """from_pretrained's location and extra arguments for a folder or a GGUF file."""
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


def _dequantized(path: Path) -> dict[str, Any]:
    """GGUF weights unpacked into a plain dense model: packed blocks cannot be trained or saved."""
    return {"quantization_config": GgufConfig(dequantize=True)} if path.suffix == ".gguf" else {}


def compute_dtype() -> torch.dtype:
    """bf16 on GPUs that have it, else fp16 on GPUs; fp32 on CPU (bf16 matmuls are slow there)."""
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def for_generation(model: PreTrainedModel | PeftModel) -> None:
    """The model cast, in place, to the dtype it generates fastest in: unchanged on GPUs (the compute
    dtype) and on CPUs without native bf16 (where bf16 is emulated and slower); bf16 on CPUs with
    AVX512-BF16 or AMX, as each decoding step reads every weight (SmolLM2-135M, 48 tokens for 5
    questions on 2 EPYC cores: 1.34 s against 3.04 s in fp32; autocast to bf16 over fp32 weights:
    2.7 s). The cast loses precision: likelihoods must be computed before it."""
    if torch.cuda.is_available():
        return
    # Private checks (torch has no public one); a torch without them keeps fp32.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = [getattr(torch.cpu, name, None) for name in checks]
    if any(check is not None and check() for check in native):
        model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers' wrapper hides nn.Module.to's signature


def attention_implementation() -> str:
    """FlashAttention 2 when installed on a GPU: it attends within each packed sample (varlen), where
    SDPA gets a dense block-diagonal mask over the whole packed row, correct but quadratic in it."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_tokenizer(path: Path, chat_template: str | None) -> PreTrainedTokenizerBase:
    """The base model's tokenizer; the configured chat template is used when it has none."""
    location, extra = _source(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **extra)
    except (OSError, ValueError) as error:
        raise ConfigError(f"base model {path}: cannot load its tokenizer: {first_line(error)}") from error
    if not tokenizer.is_fast:
        raise ConfigError(f"base model {path}: masking needs a fast tokenizer (with character offsets)")
    if not tokenizer.chat_template:
        if not chat_template:
            raise ConfigError(f"base model {path} has no chat template: set baseModel.chatTemplate")
        tokenizer.chat_template = chat_template
    return tokenizer


def load_model(path: Path, *, quantize: bool = False) -> PreTrainedModel:
    """The model at path in the compute dtype; 4-bit NF4 through bitsandbytes when quantize."""
    location, extra = _source(path)
    extra |= _quantization(path) if quantize else _dequantized(path)
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=compute_dtype(),
            attn_implementation=attention_implementation(),
            **extra,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"model {path} cannot be loaded: {first_line(error)}") from error
    return model


def _quantization(path: Path) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise ConfigError("method qlora needs a CUDA GPU (4-bit bitsandbytes); use lora on CPU")
    if path.suffix == ".gguf":
        raise ConfigError("method qlora needs a Hugging Face model folder, not a GGUF file")
    try:
        from transformers import BitsAndBytesConfig
    except ImportError as error:  # pragma: no cover - bitsandbytes ships with the trainer image
        raise ConfigError("method qlora needs the bitsandbytes package") from error
    config = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(),
    )
    return {"quantization_config": config, "device_map": {"": torch.cuda.current_device()}}


def lora_config(spec: LoraSpec) -> LoraConfig:
    targets: str | list[str] = ALL_LINEAR if ALL_LINEAR in spec.target_modules else list(spec.target_modules)
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # annotated int; alpha / r is a float anyway
        lora_dropout=spec.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def phase_model(base: Path, method: MethodSpec, start: Path | None) -> PreTrainedModel | PeftModel:
    """The model a phase trains: from the base, or from the previous phase's best checkpoint."""
    if method.type == "full":
        return load_model(start or base)
    model = load_model(base, quantize=method.type == "qlora")
    if method.type == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)  # type: ignore[no-untyped-call]
    if start is not None:
        return PeftModel.from_pretrained(model, str(start), is_trainable=True)
    try:
        return get_peft_model(model, lora_config(method.lora or LoraSpec()))
    except ValueError as error:  # e.g. target modules the model does not have
        raise ConfigError(f"method.lora: {first_line(error)}") from error


def merged_model(base: Path, adapter: Path) -> PreTrainedModel:
    """The adapter merged into an unquantized copy of the base."""
    model = PeftModel.from_pretrained(load_model(base), str(adapter))
    merged: PreTrainedModel = model.merge_and_unload()
    return merged


def first_line(error: BaseException) -> str:
    """An exception's message for a one-line error: its first line (its type when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
