"""`labtune operator run`."""

from __future__ import annotations

import logging

import click

from labtune.operator.settings import OperatorSettings

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
        click.Option(["--verbose", "-v"], is_flag=True, help="Debug logging."),
    ]
)
def run(all_namespaces: bool, verbose: bool, **options: object) -> None:
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
    if all_namespaces:
        options["namespaces"] = ()
    settings = OperatorSettings.model_validate(options)
    run_operator(settings)
