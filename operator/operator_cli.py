"""`labtune operator run`."""

from __future__ import annotations

import logging

import click
from pydantic import ValidationError

from labtune.contract.common import validation_problems
from labtune.operator.settings import LeaderElectionSettings, OperatorSettings

_DEFAULTS = OperatorSettings()


def _option(name: str, help_text: str, **kwargs: object) -> click.Option:
    field = name.replace("-", "_")
    return click.Option(
        [f"--{name}"],
        default=getattr(_DEFAULTS, field),
        show_default=True,
        envvar=f"LABTUNE_{field.upper()}",
        help=help_text,
        **kwargs,  # type: ignore[arg-type]
    )


_ELECTION = "election_"
"""The prefix of the leader election's options among run()'s keyword arguments."""


def _election_option(name: str, help_text: str, kind: type) -> click.Option:
    """A LeaderElectionSettings field as --leader-election-NAME (unset: the model's default)."""
    field = name.replace("-", "_")
    default = LeaderElectionSettings.model_fields[field].default
    shown = None if field == "identity" else default
    return click.Option(
        [f"--leader-election-{name}", f"{_ELECTION}{field}"],
        type=kind,
        default=None,
        show_default=str(shown) if shown is not None else False,
        envvar=f"LABTUNE_LEADER_ELECTION_{field.upper()}",
        help=help_text,
    )


@click.group()
def operator() -> None:
    """The labtune Kubernetes operator."""


@operator.command(
    params=[
        click.Option(
            ["--namespace", "namespaces"],
            multiple=True,
            envvar="LABTUNE_NAMESPACES",
            help="Namespace to watch (repeatable); every namespace when not given.",
        ),
        click.Option(["--all-namespaces"], is_flag=True, help="Watch every namespace (the default)."),
        _option("kubeconfig", "Kubeconfig file; in-cluster config or $KUBECONFIG when unset.", type=str),
        _option("generator-image", "Image of Taxonomy sync and SyntheticDataRun pods."),
        _option("trainer-image", "Image of TuningJob pods."),
        _option("vllm-image", "Image of the vLLM teacher sidecar."),
        _option("image-pull-policy", "imagePullPolicy of job pods."),
        _option("artifact-claim", "Default PersistentVolumeClaim for outputs."),
        _option("artifact-root", "Mount folder of artifact claims in job pods."),
        _option("job-service-account", "ServiceAccount of job pods.", type=str),
        _option("job-metrics-port", "Port job pods serve /metrics on.", type=int),
        _option("metrics-port", "Port of the operator's /metrics (0: off).", type=int),
        _option("liveness-port", "Port of the operator's /healthz (0: off).", type=int),
        _option("scrape-interval", "Seconds between reads of running pods' metrics.", type=float),
        _option("resync-interval", "Seconds between full re-reconciliations.", type=float),
        _option("workers", "Reconciliation worker threads.", type=int),
        _option("leaf-cache-max-bytes", "Size bound of the generator's leaf cache per claim.", type=int),
        click.Option(
            ["--leader-election"],
            is_flag=True,
            envvar="LABTUNE_LEADER_ELECTION",
            help="Run as one of several replicas: only the holder of the Lease reconciles.",
        ),
        _election_option("namespace", "Namespace of the leader Lease.", str),
        _election_option("lease-name", "Name of the leader Lease.", str),
        _election_option(
            "identity", "This replica's name in the Lease (default: host name and a random part).", str
        ),
        _election_option("lease-duration", "Seconds a standby waits after the leader's last renewal.", int),
        _election_option("renew-deadline", "Seconds a leader may fail to renew before it exits.", int),
        _election_option("retry-period", "Seconds between Lease renewals and acquisition tries.", int),
        click.Option(["--verbose", "-v"], is_flag=True, help="Debug logging."),
    ]
)
def run(all_namespaces: bool, verbose: bool, leader_election: bool, **options: object) -> None:
    """Run the operator until SIGTERM."""
    from labtune.operator.kopf_wiring import run as run_operator

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kopf logs every handler run of every object at INFO: thousands of lines per minute with
        # many resources. Warnings and errors stay; the operator's own transitions are Events.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # The election client logs every retry of a standby at INFO (every retry period).
        logging.getLogger("leaderelection").setLevel(logging.WARNING)
    if all_namespaces:
        options["namespaces"] = ()
    election = {
        name.removeprefix(_ELECTION): options.pop(name)
        for name in list(options)
        if name.startswith(_ELECTION) and options[name] is not None
    }
    try:
        options["leader_election"] = LeaderElectionSettings(enabled=leader_election, **election)
    except ValidationError as error:
        raise click.BadParameter(validation_problems(error)) from None
    settings = OperatorSettings.model_validate(options)
    run_operator(settings)
