"""A teacher run in-process with transformers (CPU and tests): requests are grouped by their
sampling settings, sorted by length to limit padding, and generated in batches."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labtune.contract import ConfigError
from labtune.generator.generator_metrics import GeneratorMetrics
from labtune.generator.teacher import Completion, CompletionRequest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def load_tokenizer(path: Path, name: str = "teacher tokenizer") -> PreTrainedTokenizerBase:
    """A tokenizer from a Hugging Face folder or a .gguf file; one that cannot be loaded is a
    ConfigError naming the path as `name`."""
    folder, gguf = _location(path, name)
    from transformers import AutoTokenizer

    with _loading(path, name):
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    return tokenizer


_GGUF_MAGIC = b"GGUF"


def _location(path: Path, name: str) -> tuple[Path, str | None]:
    """(folder, gguf file name) for from_pretrained, after the checks that need no transformers
    (importing it takes seconds): a .gguf file must start as one, anything else be a folder."""
    try:
        if not path.exists():
            raise ConfigError(f"{name} {path} does not exist")
        if path.suffix == ".gguf" and not path.is_dir():
            with path.open("rb") as file:
                if file.read(len(_GGUF_MAGIC)) != _GGUF_MAGIC:
                    raise ConfigError(f"{name} {path} is not a GGUF file")
            return path.parent, path.name
    except OSError as error:
        raise ConfigError(f"cannot read {name} {path}: {error.strerror}") from None
    if not path.is_dir():
        raise ConfigError(f"{name} {path} is neither a Hugging Face model folder nor a .gguf file")
    return path, None


def _check_model_config(folder: Path, name: str) -> None:
    """A model folder has a config.json holding a JSON object (what transformers reads first)."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{name} {folder} is not a Hugging Face model folder: no config.json") from None
    except OSError as error:
        raise ConfigError(f"{name} {folder}: cannot read config.json: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{name} {folder}: config.json is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name} {folder}: config.json is not a JSON object")


@contextmanager
def _loading(path: Path, name: str) -> Iterator[None]:
    """What transformers raises for files it cannot use (OSError, ValueError, often several
    lines) as one ConfigError line naming the path."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise ConfigError(f"{name} {path} cannot be loaded: {' '.join(str(error).split())}") from error


class TransformersTeacher:
    def __init__(self, path: Path, *, batch_size: int, metrics: GeneratorMetrics) -> None:
        name = "teacher model"
        folder, gguf = _location(path, name)
        if gguf is None:
            _check_model_config(folder, name)
        from transformers import AutoModelForCausalLM

        self.tokenizer = load_tokenizer(path, name)
        # Left padding: every row of a batch ends where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Any: transformers types `generate` against a protocol no concrete model class satisfies.
        with _loading(path, name):
            self.model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
        self._name = path.name
        self._batch_size = batch_size
        self._metrics = metrics
        # One long-lived thread runs every `generate`: the model is not re-entrant, and torch's
        # OpenMP team and kernel caches belong to the calling thread, so a fresh thread per call
        # (asyncio.to_thread in a new event loop) pays their warm-up again (~15% of throughput).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")

    @property
    def model_name(self) -> str:
        return self._name

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.generate, requests)

    async def aclose(self) -> None:
        self._worker.shutdown(wait=True)

    def render(self, request: CompletionRequest) -> str:
        """The prompt text with the model's chat template applied."""
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": request.prompt})
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert isinstance(text, str)  # tokenize=False
        return text

    def generate(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """Completions for the requests, in order (blocking)."""
        groups: dict[tuple[int, float], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[(request.max_tokens, request.temperature)].append(index)
        results: list[Completion | None] = [None] * len(requests)
        for indices in groups.values():
            prompts = {i: self.render(requests[i]) for i in indices}
            ordered = sorted(indices, key=lambda i: len(prompts[i]))
            for start in range(0, len(ordered), self._batch_size):
                batch = ordered[start : start + self._batch_size]
                replies = self.generate_batch([prompts[i] for i in batch], requests[batch[0]])
                for i, reply in zip(batch, replies, strict=True):
                    results[i] = reply
        return [r for r in results if r is not None]

    def generate_batch(self, prompts: list[str], settings: CompletionRequest) -> list[Completion]:
        """One batched `generate` call; the batch shares the settings (and the seed) of `settings`."""
        import torch

        started = time.monotonic()
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": settings.temperature, "top_p": 0.95}
            if settings.temperature > 0
            else {"do_sample": False}
        )
        torch.manual_seed(settings.seed)
        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                max_new_tokens=settings.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        prompt_length = encoded["input_ids"].shape[1]
        replies = []
        for row, mask in zip(output, encoded["attention_mask"], strict=True):
            generated = row[prompt_length:]
            stop = (generated == self.tokenizer.eos_token_id).nonzero()
            if len(stop):
                generated = generated[: int(stop[0])]
            replies.append(
                Completion(
                    text=self.tokenizer.decode(generated, skip_special_tokens=True),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(generated),
                )
            )
        elapsed = time.monotonic() - started
        self._metrics.requests.labels("ok").inc(len(replies))
        for _ in replies:
            self._metrics.latency.observe(elapsed)
        return replies
