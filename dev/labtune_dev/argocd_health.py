"""The chart's Argo CD health checks (charts/labtune/files/argocd/): one Lua script per kind, and the
argocd-cm snippet users merge into Argo CD's ConfigMap, rendered from the scripts by `render_snippet`
(tests/unit/test_chart.py fails when the file and the scripts drift; `write_snippet` rewrites it).

Argo CD looks a resource's health script up in argocd-cm under
`resource.customizations.health.<group>_<kind>`, one stand-alone script per key.
"""

from __future__ import annotations

from pathlib import Path

from labtune.api import GROUP

FILES = Path(__file__).resolve().parents[2] / "charts" / "labtune" / "files" / "argocd"
SNIPPET = FILES / "argocd-cm-health.yaml"
KINDS = ("Taxonomy", "SyntheticDataRun", "TuningJob", "LabPipeline")
_HEADER = """\
# Argo CD health checks for the labtune.io kinds. Argo CD reads them only from its argocd-cm
# ConfigMap: merge this into it, e.g.
#   kubectl patch configmap argocd-cm -n argocd --patch-file argocd-cm-health.yaml
# or list this file under `patches:` in the kustomization that installs Argo CD (docs/gitops.md).
# Generated from the health-*.lua files beside it (dev/labtune_dev/argocd_health.py); do not edit.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
data:
"""


def config_key(kind: str) -> str:
    return f"resource.customizations.health.{GROUP}_{kind}"


def script_path(kind: str) -> Path:
    return FILES / f"health-{kind.lower()}.lua"


def scripts() -> dict[str, str]:
    """Each kind's health script, by kind."""
    return {kind: script_path(kind).read_text() for kind in KINDS}


def render_snippet() -> str:
    """The argocd-cm patch: each script as a literal block, its text exactly (ending in one newline)."""
    parts = [_HEADER]
    for kind, text in scripts().items():
        if not text.endswith("\n") or text.endswith("\n\n"):
            raise ValueError(f"{script_path(kind)} must end in exactly one newline")
        body = "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())
        parts.append(f"  {config_key(kind)}: |\n{body}")
    return "".join(parts)


def write_snippet() -> Path:
    SNIPPET.write_text(render_snippet())
    return SNIPPET
