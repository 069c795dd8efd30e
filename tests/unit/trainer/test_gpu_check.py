"""The GPU check (benchmarks/gpu_check.py) as its command runs, with --tiny on CPU: it must keep
working for the day a GPU is there, and must not report CPU figures as GPU figures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "gpu_check.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_the_tiny_check_runs_every_case_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--scratch", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["gpu_figures"] is False
    assert report["environment"]["device"] == "cpu"
    assert "CPU (not GPU figures)" in done.stdout
    results = {r["name"]: r for r in report["results"]}
    trained = [
        "labtune tiny full",
        "labtune tiny lora",
        "trl-packed tiny lora",
        "trl-packed tiny full",
        "labtune tiny full +AC",
        "labtune tiny lora +AC",
    ]
    assert list(results) == [*trained[:6], "labtune tiny qlora +AC", "likelihood tiny"]
    for name in trained:
        result = results[name]
        assert "error" not in result, result
        assert result["steps"] == 2  # the measured steps after the warm-up
        assert result["tokens"] > 0
        assert result["tokens_per_second"] == pytest.approx(result["tokens"] / result["seconds"])
        assert "mfu" not in result  # no MFU from CPU figures
    assert results["labtune tiny qlora +AC"]["skipped"] == "QLoRA needs a CUDA GPU"
    assert results["likelihood tiny"]["examples"] == 8
    assert results["likelihood tiny"]["tokens_per_second"] > 0
    # labtune's ratio to TRL's packed configuration, for the same model and method
    full = results["labtune tiny full"]
    assert full["vs_trl"] == pytest.approx(
        full["tokens_per_second"] / results["trl-packed tiny full"]["tokens_per_second"]
    )
    # a sample is longer than a few tokens: attention's FLOPs use the real token lengths
    assert report["models"]["tiny"]["attention_length"] > 20


def test_mfu_counts_the_flops_the_method_needs() -> None:
    gpu_check = _module()
    model = {"architecture": "llama-1b", "parameters": 1_000_000_000, "attention_length": 500.0}
    attention = 12 * 16 * 2048 * 500.0
    full = gpu_check.mfu({"method": "full", "tokens_per_second": 10_000.0}, model, (1000.0, 800.0))
    assert full["tflops"] == pytest.approx((6e9 + attention) * 1e4 / 1e12)
    assert full["mfu"] == pytest.approx(full["tflops"] / 1000.0)
    assert full["mfu_measured_peak"] == pytest.approx(full["tflops"] / 800.0)
    lora = gpu_check.mfu({"method": "lora", "tokens_per_second": 10_000.0}, model, (1000.0, 800.0))
    assert lora["tflops"] == pytest.approx((4e9 + attention) * 1e4 / 1e12)


def test_without_a_gpu_the_full_check_says_to_use_tiny(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check: no CUDA GPU here; run it with --tiny to check the script on CPU"
    assert not (tmp_path / "r.json").exists()
