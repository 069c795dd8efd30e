"""Progress while training: Prometheus gauges on the metrics port (the names the operator reads
are in labtune.contract.metric_names) and one readable log line per logging step."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import torch
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, start_http_server
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from labtune.contract import metric_names as names
from labtune.contract.common import metrics_port_error

log = logging.getLogger(__name__)


@dataclass
class RunProgress:
    """Optimizer steps per phase over the whole run: estimated up front, exact once a phase starts."""

    phase_steps: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.phase_steps.values())

    def done_before(self, phase: str) -> int:
        """Steps of the phases before this one (phases run in dict order)."""
        names_before = list(self.phase_steps)[: list(self.phase_steps).index(phase)]
        return sum(self.phase_steps[name] for name in names_before)


class ObservedGauge:
    """A gauge registered (served) from its first value on."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._gauge = Gauge(name, documentation, registry=None)
        self._registry: CollectorRegistry | None = registry

    def set(self, value: float) -> None:
        self._gauge.set(value)
        if self._registry is not None:
            self._registry.register(self._gauge)
            self._registry = None


class MetricsServer:
    """A registry of its own, with the process's resident memory and CPU seconds, served on `port`
    once `serve` is called (0: not served; a port that cannot be bound is a ConfigError)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None

    def serve(self, port: int) -> None:
        if port:
            try:
                self._server, _ = start_http_server(port, registry=self.registry)
            except OSError as error:  # taken since the command checked it: one line, exit 78
                raise metrics_port_error(port, error) from None

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry)

    def _observed(self, name: str, documentation: str) -> ObservedGauge:
        return ObservedGauge(name, documentation, self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class TrainerMetrics(MetricsServer):
    """The trainer's gauges, served on `port`."""

    def __init__(self, port: int) -> None:
        super().__init__()
        gauge = self._gauge
        self.step = gauge(names.TRAIN_STEP, "Optimizer steps done over all phases")
        self.total_steps = gauge(names.TRAIN_TOTAL_STEPS, "Optimizer steps over all phases")
        self.epoch = gauge(names.TRAIN_EPOCH, "Fractional epoch within the current phase")
        # Measurements exist only from the first logging step on: until then they are not served
        # at all, rather than as a 0 that reads (in status, on dashboards) as a loss of 0.
        observed = self._observed
        self.loss = observed(names.TRAIN_LOSS, "Training loss at the last logging step")
        self.eval_loss = observed(names.TRAIN_EVAL_LOSS, "Held-out loss at the last evaluation")
        self.learning_rate = observed(names.TRAIN_LEARNING_RATE, "Current learning rate")
        self.tokens_per_second = observed(
            names.TRAIN_TOKENS_PER_SECOND, "Input tokens per second, all processes"
        )
        self.eta_seconds = observed(names.TRAIN_ETA_SECONDS, "Estimated seconds until all phases are done")
        self.progress = gauge("labtune_train_progress_ratio", "Steps done over all steps, 0 to 1")
        self.gpu_memory = observed(
            "labtune_train_gpu_memory_bytes", "Peak GPU memory allocated by this process"
        )
        self.phase = Gauge(
            names.TRAIN_PHASE, "1 for the phase training now", ["phase"], registry=self.registry
        )
        self.serve(port)


class EvaluationMetrics(MetricsServer):
    """`labtune evaluate`'s progress, served on `port`: scorings done out of all, where one scoring
    is one example scored for one model by one pass (likelihood or generation)."""

    def __init__(self, port: int, total: int) -> None:
        super().__init__()
        # Not in labtune.contract.metric_names until the operator reads them (then the dashboard shows them).
        self.total = self._gauge("labtune_evaluate_total", "Scorings to do: examples x models x passes")
        self.scored = self._gauge("labtune_evaluate_scored", "Scorings done")
        self.progress = self._gauge("labtune_evaluate_progress_ratio", "Scorings done over all, 0 to 1")
        self.total.set(total)
        self._done, self._all = 0, total
        self.serve(port)

    def add(self, scorings: int) -> None:
        self._done += scorings
        self.scored.set(self._done)
        self.progress.set(self._done / self._all if self._all else 0.0)


class ProgressCallback(TrainerCallback):
    """Updates the gauges (on the process that serves them) and logs progress (on process 0)."""

    def __init__(self, phase: str, progress: RunProgress, metrics: TrainerMetrics | None) -> None:
        self.phase = phase
        self.progress = progress
        self.metrics = metrics
        self._started = self._last_log = time.monotonic()
        self._first_step = self._last_tokens = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self.progress.phase_steps[self.phase] = state.max_steps
        self._started = self._last_log = time.monotonic()
        self._first_step, self._last_tokens = state.global_step, state.num_input_tokens_seen
        if self.metrics is not None:
            for name in self.progress.phase_steps:
                self.metrics.phase.labels(phase=name).set(1 if name == self.phase else 0)
            self.metrics.total_steps.set(self.progress.total)
        self._update_steps(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: object
    ) -> None:
        self._update_steps(state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: object,
    ) -> None:
        logs = logs or {}
        if "loss" in logs:
            self._training_log(state, logs)
        if "eval_loss" in logs:
            if self.metrics is not None:
                self.metrics.eval_loss.set(logs["eval_loss"])
            if state.is_world_process_zero:
                log.info("%s step %d: eval loss %.4f", self.phase, state.global_step, logs["eval_loss"])

    def _training_log(self, state: TrainerState, logs: dict[str, float]) -> None:
        now = time.monotonic()
        tokens_per_second = (state.num_input_tokens_seen - self._last_tokens) / max(
            now - self._last_log, 1e-9
        )
        self._last_log, self._last_tokens = now, state.num_input_tokens_seen
        if self.metrics is not None:
            self.metrics.loss.set(logs["loss"])
            self.metrics.learning_rate.set(logs.get("learning_rate", 0.0))
            self.metrics.tokens_per_second.set(tokens_per_second)
            if torch.cuda.is_available():
                self.metrics.gpu_memory.set(torch.cuda.max_memory_allocated())
        if state.is_world_process_zero:
            done, total = self._done(state), self.progress.total
            eta = self._eta(state)
            log.info(
                "%s step %d/%d | all phases %d/%d (%d%%) | epoch %.2f | loss %.4f | lr %.2e | %.0f tok/s%s",
                self.phase,
                state.global_step,
                state.max_steps,
                done,
                total,
                100 * done // max(total, 1),
                state.epoch or 0.0,
                logs["loss"],
                logs.get("learning_rate", 0.0),
                tokens_per_second,
                f" | eta {_duration(eta)}" if eta is not None else "",
            )

    def _done(self, state: TrainerState) -> int:
        return self.progress.done_before(self.phase) + state.global_step

    def _eta(self, state: TrainerState) -> float | None:
        steps = state.global_step - self._first_step
        if steps <= 0:
            return None
        per_step = (time.monotonic() - self._started) / steps
        return per_step * max(self.progress.total - self._done(state), 0)

    def _update_steps(self, state: TrainerState) -> None:
        if self.metrics is None:
            return
        done, total = self._done(state), self.progress.total
        self.metrics.step.set(done)
        self.metrics.epoch.set(state.epoch or 0.0)
        self.metrics.progress.set(done / total if total else 0.0)
        eta = self._eta(state)
        if eta is not None:
            self.metrics.eta_seconds.set(eta)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
