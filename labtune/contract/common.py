"""What every job pod shares: config loading, artifact paths, the termination summary, exit codes."""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

CONTRACT_VERSION: Final = "v1"

# Exit codes. The operator's pod failure policy fails the Job at once on a configuration error
# (retrying cannot help) and does not count a preemption (the pod saved its state first).
EXIT_FAILED = 1
EXIT_PREEMPTED = 75  # sysexits EX_TEMPFAIL: stopped by SIGTERM after saving a checkpoint
EXIT_CONFIG_ERROR = 78  # sysexits EX_CONFIG: bad config or input data

SUMMARY_LIMIT_BYTES = 4096  # the kubelet truncates termination messages beyond this
DEFAULT_METRICS_PORT = 9090


LeafType = Literal["knowledge", "freeform_skill", "grounded_skill"]
"""A taxonomy leaf's type: knowledge (with documents), a freeform or a grounded (with context) skill."""


class ConfigError(Exception):
    """Bad configuration or input: the pod exits with EXIT_CONFIG_ERROR and this one-line message."""


class ContractModel(BaseModel):
    """camelCase on the wire like the API; unknown keys are an error (a typo must not be ignored)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PodConfig(ContractModel):
    """Fields every job pod's config has."""

    contract_version: Literal["v1"] = CONTRACT_VERSION
    artifact_root: str = "/artifacts"
    """Where `pvc://<claim>/…` URIs are mounted: claim <claim> at <artifactRoot>/<claim>."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_METRICS_PORT
    """Port of the Prometheus /metrics endpoint while the pod runs; 0 disables it."""
    termination_log: str = "/dev/termination-log"
    """Where the final JSON summary goes."""


ConfigT = TypeVar("ConfigT", bound=PodConfig)


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line: `line 3, column 5: mapping values are not allowed here`."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return " ".join(str(error).split())


def read_yaml(path: Path, name: str) -> Any:
    """The data of a YAML (or JSON) file; any problem becomes one ConfigError line naming the
    file as `name` (`config`, `pipeline`)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {name} {path}: {error.strerror}") from error
    except UnicodeDecodeError:
        raise ConfigError(f"{name} {path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{name} {path} is not valid YAML: {yaml_problem(error)}") from error


def validation_problems(error: ValidationError) -> str:
    """Pydantic's errors in one line: `phases.0.maxSeqLen: Input should be greater than 0; …`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {' '.join(e['msg'].split())}"
        for e in error.errors()
    )


def load_config(path: Path, model: type[ConfigT]) -> ConfigT:
    """Reads a YAML or JSON config file; any problem becomes one ConfigError line naming the file."""
    data = read_yaml(path, "config")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"config {path} is invalid: {validation_problems(error)}") from error


def check_termination_log(path: str | Path) -> None:
    """The termination log can be written at the end of the run, checked at its start so that a
    wrong path fails in seconds rather than after the work. Creates nothing: in a pod the kubelet
    mounts the file; run by hand it is usually missing, and then the folder it would be created in
    must exist and be writable (write_summary creates no folders)."""
    log = Path(path)

    def problem(reason: str) -> ConfigError:
        return ConfigError(
            f"termination log {path} cannot be written: {reason}: set terminationLog to a writable file"
        )

    try:
        if log.is_dir():
            raise problem("it is a folder")
        if log.exists():
            if not os.access(log, os.W_OK):
                raise problem("it is not writable")
            return
        folder = log.parent
        if not folder.exists():
            raise problem(f"folder {folder} does not exist")
        if not folder.is_dir():
            raise problem(f"{folder} is a file")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise problem(f"folder {folder} is not writable")
    except OSError as error:  # e.g. a folder on the way that this process may not search
        raise problem(error.strerror or str(error)) from None


def metrics_port_error(port: int, error: OSError) -> ConfigError:
    """The one line for a metrics port that cannot be served (found in use, or not allowed)."""
    hint = "set metricsPort to a free port or 0 to disable it"
    if error.errno == errno.EADDRINUSE:
        return ConfigError(f"metrics port {port} is in use: {hint}")
    return ConfigError(f"metrics port {port} cannot be opened: {error.strerror or error}: {hint}")


def check_metrics_port(port: int) -> None:
    """The metrics port (0: not served) can be bound now as the metrics server binds it, for a
    process that starts its server only after some slow work (the trainer: after importing torch
    and tokenizing the data); it is released again at once. Raises ConfigError."""
    if not port:
        return
    # prometheus_client's server: the first address getaddrinfo gives for 0.0.0.0, SO_REUSEADDR
    # (http.server's), so a port left in TIME_WAIT counts as free and one listened on does not.
    family, _, _, _, address = socket.getaddrinfo(
        "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise metrics_port_error(port, error) from None


def resolve_artifact(uri: str, artifact_root: str | Path) -> Path:
    """The local path of an artifact URI: `pvc://claim/a/b` -> <artifact_root>/claim/a/b."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return Path(uri)  # a plain local path, for runs by hand
    if scheme != "pvc":
        raise ConfigError(f"artifact {uri}: only pvc:// URIs are supported so far (s3:// is planned)")
    claim, _, relative = rest.partition("/")
    if not claim or ".." in Path(relative).parts:
        raise ConfigError(f"artifact {uri}: expected pvc://<claim>/<path> without '..'")
    return Path(artifact_root) / claim / relative


def output_path(uri: str, artifact_root: str | Path, name: str, *, folder: bool = True) -> Path:
    """The local path of an output artifact (`name` in messages), checked before any work so that
    a bad one fails in seconds: a folder (with folder=False, a file) this process can write there or
    create. Creates nothing."""
    path = resolve_artifact(uri, artifact_root)
    if path.exists() and path.is_dir() != folder:
        kind = "a file, not a folder" if folder else "a folder, not a file"
        raise ConfigError(f"{name} {uri} is {kind}")
    # The output itself when it exists, else the folder it would be created in, must be writable.
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing != path and not existing.is_dir():
        raise ConfigError(f"{name} {uri} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
        raise ConfigError(f"{name} {uri} cannot be written: {existing} is not writable")
    return path


SummaryT = TypeVar("SummaryT", bound=BaseModel)


def _summary_size(summary: BaseModel) -> int:
    data = summary.model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(data, separators=(",", ":")).encode())


def fit(summary: SummaryT, list_fields: tuple[str, ...]) -> SummaryT:
    """A copy of `summary` whose `list_fields` are cut (the longest first) until it fits the
    termination log; their counts stay exact in other fields."""
    while _summary_size(summary) > SUMMARY_LIMIT_BYTES:
        lengths = {name: len(getattr(summary, name)) for name in list_fields}
        longest = max(lengths, key=lambda name: lengths[name])
        if lengths[longest] == 0:
            raise ValueError("summary does not fit the termination log even with every list emptied")
        summary = summary.model_copy(update={longest: getattr(summary, longest)[: lengths[longest] // 2]})
    return summary


def write_summary(summary: BaseModel, path: str | Path) -> str:
    """Writes the summary JSON to the termination log and returns it; it must fit the kubelet's
    4 KiB limit (callers keep lists short and put full detail in artifacts)."""
    data = summary.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = json.dumps(data, separators=(",", ":"))
    size = len(text.encode())
    if size > SUMMARY_LIMIT_BYTES:
        raise ValueError(f"summary is {size} bytes; the termination log holds {SUMMARY_LIMIT_BYTES}")
    Path(path).write_text(text)
    return text
