"""A GGUF model converted once into a Hugging Face folder in the labtune cache.

The trainer reads GGUF files directly, but dequantizing takes a while on every load; tests,
benchmarks and demos that load the same small model many times use this folder instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from labtune.trainer.digests import file_sha256
from labtune.trainer.modeling import load_model, load_tokenizer


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labtune"
    return Path(os.environ.get("LABTUNE_CACHE", default))


def hf_folder(gguf: Path) -> Path:
    """The Hugging Face folder of the GGUF file (weights in the trainer's compute dtype)."""
    folder = cache_root() / "models" / f"{gguf.stem}-{file_sha256(gguf)[:12]}"
    if (folder / "config.json").exists():
        return folder
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    load_model(gguf).save_pretrained(temporary)
    load_tokenizer(gguf, None).save_pretrained(temporary)
    try:
        temporary.rename(folder)  # config.json appears only with the complete folder
    except OSError:
        # Another process (a test run beside a benchmark) converted it first: theirs is as good.
        shutil.rmtree(temporary, ignore_errors=True)
        if not (folder / "config.json").exists():
            raise
    return folder
