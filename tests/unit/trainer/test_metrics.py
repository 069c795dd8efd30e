from __future__ import annotations

import socket
import urllib.request

from transformers import TrainerControl, TrainerState, TrainingArguments

from labtune.contract import metric_names as names
from labtune.trainer.trainer_metrics import ProgressCallback, RunProgress, TrainerMetrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _served(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in body.splitlines()
        if not line.startswith("#")
    }


def test_progress_over_all_phases_is_served_on_the_metrics_port(tmp_path: object) -> None:
    port = _free_port()
    metrics = TrainerMetrics(port)
    try:
        # Before the first logging step there is no loss: nothing is served, not a 0.
        unlogged = _served(port)
        assert unlogged[names.TRAIN_STEP] == 0
        for name in (names.TRAIN_LOSS, names.TRAIN_EVAL_LOSS, names.TRAIN_LEARNING_RATE):
            assert name not in unlogged
        assert names.TRAIN_TOKENS_PER_SECOND not in unlogged
        progress = RunProgress({"knowledge": 10, "skills": 30})
        callback = ProgressCallback("skills", progress, metrics)
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
        state = TrainerState(global_step=0, max_steps=20, num_input_tokens_seen=0)
        callback.on_train_begin(args, state, TrainerControl())  # the phase turned out to have 20 steps
        state.global_step, state.epoch, state.num_input_tokens_seen = 5, 0.25, 1000
        callback.on_step_end(args, state, TrainerControl())
        callback.on_log(args, state, TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-4})
        callback.on_log(args, state, TrainerControl(), logs={"eval_loss": 1.25})
        state.num_input_tokens_seen = 2000  # a second logging step: the gauges are set again
        callback.on_log(args, state, TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-4})
        served = _served(port)
    finally:
        metrics.close()
    assert served[names.TRAIN_STEP] == 15
    assert served[names.TRAIN_TOTAL_STEPS] == 30
    assert served[names.TRAIN_EPOCH] == 0.25
    assert served[names.TRAIN_LOSS] == 1.5
    assert served[names.TRAIN_EVAL_LOSS] == 1.25
    assert served[names.TRAIN_LEARNING_RATE] == 1e-4
    assert served[names.TRAIN_TOKENS_PER_SECOND] > 0
    assert names.TRAIN_ETA_SECONDS in served
    assert served["labtune_train_progress_ratio"] == 0.5
    assert served[f'{names.TRAIN_PHASE}{{phase="skills"}}'] == 1
    assert served[f'{names.TRAIN_PHASE}{{phase="knowledge"}}'] == 0
    assert "process_resident_memory_bytes" in served
