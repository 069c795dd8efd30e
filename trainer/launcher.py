"""Running the trainer processes under torchrun when the config asks for more than one.

`labtune train` stays the pod's main process: it starts torchrun in a session of its own, turns
SIGTERM into the workers' stop file (so every worker finishes its step and saves, however long
that takes; torchrun would kill them after a fixed grace period), and exits with the workers'
contract exit code (torchrun only reports that a worker failed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from labtune.contract import EXIT_CONFIG_ERROR, EXIT_FAILED, EXIT_PREEMPTED, ConfigError
from labtune.contract.train import TrainConfig
from labtune.trainer import worker_rank

STOP_FILE_ENV = "LABTUNE_STOP_FILE"
"""The file the launcher creates when it gets SIGTERM; the workers stop when it appears."""
EXIT_DIR_ENV = "LABTUNE_EXIT_DIR"
"""Where each worker records its exit code (file named by its rank)."""
DEFAULT_MASTER_PORT = "29500"


def needs_launch(config: TrainConfig) -> bool:
    spec = config.distributed
    return spec.nodes * spec.procs_per_node > 1 and not worker_rank.under_torchrun()


def record_exit(code: int) -> None:
    """Leaves this worker's exit code for the launcher (no-op outside it)."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if folder:
        (Path(folder) / str(worker_rank.rank())).write_text(str(code))


def torchrun_args(config: TrainConfig, config_path: Path) -> list[str]:
    spec = config.distributed
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={spec.procs_per_node}"]
    args += ["--max-restarts=0"]  # the Job retries the pod; the checkpoint carries the progress
    if spec.nodes == 1:
        args.append("--standalone")
    else:
        master = os.environ.get("MASTER_ADDR")
        node_rank = os.environ.get("JOB_COMPLETION_INDEX", os.environ.get("NODE_RANK"))
        if not master or node_rank is None:
            raise ConfigError(
                f"distributed.nodes is {spec.nodes}: set MASTER_ADDR and JOB_COMPLETION_INDEX (or NODE_RANK)"
            )
        port = os.environ.get("MASTER_PORT", DEFAULT_MASTER_PORT)
        args += [f"--nnodes={spec.nodes}", f"--node-rank={node_rank}"]
        args += [f"--master-addr={master}", f"--master-port={port}"]
    return [*args, "-m", "labtune.trainer", "--config", str(config_path)]


def launch(config: TrainConfig, config_path: Path) -> int:
    """Runs torchrun to the end and returns the exit code the pod should exit with. SIGTERM and
    SIGINT (Ctrl-C by hand) stop the workers through the stop file."""
    with tempfile.TemporaryDirectory(prefix="labtune-train-") as scratch:
        stop_file, exit_dir = Path(scratch) / "stop", Path(scratch) / "exit"
        exit_dir.mkdir()
        env = os.environ | {STOP_FILE_ENV: str(stop_file), EXIT_DIR_ENV: str(exit_dir)}

        def stop(signum: int, frame: FrameType | None) -> None:
            stop_file.touch()

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        process = subprocess.Popen(torchrun_args(config, config_path), env=env, start_new_session=True)
        try:
            returncode = process.wait()
        finally:
            if process.poll() is None:  # this process is failing: take the workers with it
                os.killpg(process.pid, signal.SIGKILL)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        codes = {int(p.read_text()) for p in exit_dir.iterdir()}
    if returncode == 0:
        return 0
    if EXIT_CONFIG_ERROR in codes:
        return EXIT_CONFIG_ERROR
    if codes == {EXIT_PREEMPTED}:
        return EXIT_PREEMPTED
    return EXIT_FAILED
