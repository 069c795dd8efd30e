"""Building blocks shared by the three labtune.io kinds: the wire conventions, conditions,
references, scheduling and batch settings, and the CEL rule helpers the CRD generator reads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "labtune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

CEL_KEY = "x-kubernetes-validations"


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry: a CEL rule the API server checks, with the message a
    user sees when it fails."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def rules(*entries: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, for `Field(...)` or a model's `model_config`."""
    return {CEL_KEY: list(entries)}


def model_rules(*entries: dict[str, str]) -> ConfigDict:
    """A model's `model_config` carrying CEL rules over its fields (merged with ApiModel's config)."""
    return ConfigDict(json_schema_extra=rules(*entries))


def exactly_one(*fields: str) -> str:
    """A CEL expression true when exactly one of the (optional) fields is set."""
    return "[" + ", ".join(f"has(self.{f})" for f in fields) + "].filter(x, x).size() == 1"


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, field docstrings
    become the descriptions `kubectl explain` prints."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- scalar types -----------------------------------------------------------------------------

_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        json_schema_extra=rules(
            cel(
                f"self.matches(r'{_DNS1123_SUBDOMAIN}')",
                "must be a valid Kubernetes object name: lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
            )
        ),
    ),
]
"""The name of a Kubernetes object in the same namespace (RFC 1123 subdomain)."""

LabelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        json_schema_extra=rules(
            cel(
                f"self.matches(r'{_DNS1123_LABEL}')",
                "must be a lowercase RFC 1123 label: letters, digits and '-', at most 63 characters",
            )
        ),
    ),
]
"""A short name (RFC 1123 label), e.g. a phase name."""

ArtifactURI = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        json_schema_extra=rules(
            # s3:// waits for an object-store backend: until then no pod could read or write it.
            cel(
                "self.startsWith('pvc://')",
                "must be a pvc://<claim>/<path> artifact URI: only PersistentVolumeClaims are supported "
                "so far (s3:// is planned)",
            ),
            cel(
                "!self.startsWith('pvc://') || self.matches(r'^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/]+)*/?$')",
                "must be pvc://<claim>/<path>, the claim a lowercase RFC 1123 name",
            ),
            cel(
                "!self.matches(r'(^|/)[.][.](/|$)')",
                "must not contain '..' path segments: a pod would leave its claim's folder",
            ),
        ),
    ),
]
"""Where an artifact lives: `pvc://<claim>/<path>` on a PersistentVolumeClaim in the resource's
namespace (object stores are planned)."""

Quantity = Annotated[
    str,
    Field(
        max_length=64,
        json_schema_extra=rules(cel("isQuantity(self)", "must be a Kubernetes quantity such as 8Gi or 500m")),
    ),
]
"""A Kubernetes resource quantity (e.g. `16Gi`, `500m`)."""

Duration = Annotated[
    str,
    Field(
        max_length=32,
        json_schema_extra=rules(
            cel(
                r"self.matches(r'^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('30s')",
                "must be a duration of at least 30s, such as 90s, 5m or 1h30m",
            )
        ),
    ),
]
"""A duration such as `30s`, `5m` or `1h30m`."""

CommitSHA = Annotated[
    str,
    Field(
        max_length=40,
        json_schema_extra=rules(
            cel("self.matches(r'^[0-9a-f]{7,40}$')", "must be a git commit SHA: 7 to 40 lowercase hex digits")
        ),
    ),
]
"""A git commit SHA (abbreviated or full)."""

Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]
"""A hex sha256 digest."""

LongText = Annotated[str, Field(max_length=32768)]


# --- references -------------------------------------------------------------------------------


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""


class SecretKeyReference(ApiModel):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key within the Secret's data."""


class ConfigMapKeyReference(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: ObjectName
    """Name of the ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key within the ConfigMap's data."""


# --- scheduling -------------------------------------------------------------------------------


_QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"  # optional DNS prefix
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_KEY_MESSAGE = "a label key: an optional DNS prefix and '/', then letters, digits, '-', '_' and '.'"
_VALUE_MESSAGE = (
    "a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)

LabelKey = Annotated[
    str,
    Field(
        max_length=317,
        json_schema_extra=rules(cel(f"self.matches(r'{_QUALIFIED_NAME}')", f"must be {_KEY_MESSAGE}")),
    ),
]
LabelValue = Annotated[
    str,
    Field(
        max_length=63,
        json_schema_extra=rules(cel(f"self.matches(r'{_LABEL_VALUE}')", f"must be {_VALUE_MESSAGE}")),
    ),
]


class Toleration(ApiModel):
    """A pod toleration, as in `core/v1` (added to the nvidia.com/gpu toleration labtune always sets)."""

    key: LabelKey | None = None
    """Taint key to tolerate; empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] | None = None
    """`Exists` or `Equal` (the default)."""
    value: LabelValue | None = None
    """Taint value to match when the operator is `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches every effect."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """How long a NoExecute taint is tolerated before eviction."""


class SchedulingSpec(ApiModel):
    """Where and how job pods are scheduled. GPU pods always get the `nvidia.com/gpu` toleration,
    a memory-backed /dev/shm and, when `gpuProduct` is set, node affinity on
    `nvidia.com/gpu.product`."""

    gpu_product: Annotated[str, Field(max_length=128)] | None = None
    """Required value of the node label `nvidia.com/gpu.product` (e.g. `NVIDIA-H100-80GB-HBM3`)."""
    cpu: Quantity | None = None
    """CPU request and limit per pod."""
    memory: Quantity | None = None
    """Memory request and limit per pod."""
    shm_size: Quantity | None = None
    """Size limit of the memory-backed /dev/shm (defaults to half the memory limit, or 16Gi)."""
    node_selector: Annotated[
        dict[Annotated[str, Field(max_length=317)], LabelValue],
        Field(
            max_length=32,
            # Structural schemas cannot constrain map keys, so the keys are checked over the map.
            json_schema_extra=rules(
                cel(f"self.all(k, k.matches(r'{_QUALIFIED_NAME}'))", f"every key must be {_KEY_MESSAGE}")
            ),
        ),
    ] = Field(default_factory=dict)
    """Node labels the pods must match."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    """Extra tolerations."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the pods."""
    runtime_class_name: ObjectName | None = None
    """RuntimeClass of the pods (e.g. `nvidia`)."""


# --- batch semantics --------------------------------------------------------------------------


MANAGED_BY_LABTUNE = "labtune.io/operator"
"""`spec.managedBy` of the runs this operator reconciles (also when unset)."""


class BatchSpec(ApiModel):
    """Run-to-completion settings with the meaning they have on `batch/v1` Jobs."""

    managed_by: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=63,
                json_schema_extra=rules(
                    cel(
                        r"self.matches(r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-a-zA-Z0-9._/]+$')",
                        "must be a domain-prefixed path, e.g. kueue.x-k8s.io/multikueue",
                    )
                ),
            ),
        ]
        | None
    ) = None
    """The controller that runs this resource, as on batch/v1 Jobs: unset or `labtune.io/operator`
    is this operator; any other value (Kueue's MultiKueue sets `kueue.x-k8s.io/multikueue` on the
    manager cluster's copy of a run it dispatches to a worker cluster) and this operator leaves the
    resource alone: no Job, no status write. Immutable."""

    suspend: bool = False
    """Suspend the run: no pods run while true; running pods are stopped (a TuningJob saves a
    checkpoint first) and resume when set back to false. The only field that may change after
    the run has started."""
    active_deadline_seconds: Annotated[int, Field(ge=1, le=31_536_000)] | None = None
    """Fail the run when it has been active this long (seconds; suspended time not counted)."""
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Pod failures retried before the run fails. Configuration errors fail at once; node
    disruptions and preemptions do not count."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    """Delete the child Jobs and pods this long after the run finished; the resource and its
    outputs are kept."""


# --- status -----------------------------------------------------------------------------------

RunState = Literal["Pending", "Waiting", "Queued", "Suspended", "Running", "Succeeded", "Failed"]
"""One-word summary of a run's conditions, for `kubectl get`."""

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A `metav1.Condition`: one aspect of the resource's state."""

    type: Annotated[str, Field(max_length=316)]
    """Condition type, e.g. `Ready`, `Succeeded`."""
    status: ConditionStatus
    """`True`, `False` or `Unknown`."""
    reason: Annotated[str, Field(max_length=1024)]
    """Machine-readable CamelCase reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable detail."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` the condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class StatusBase(ApiModel):
    """Status fields every labtune.io kind has (kstatus conventions)."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` the status reflects."""
    conditions: Conditions = Field(default_factory=list)
    """Current conditions; `Ready` summarises them."""


class RunStatusBase(StatusBase):
    """Status fields of the run-to-completion kinds (SyntheticDataRun, TuningJob)."""

    state: RunState | None = None
    """One-word summary of the conditions."""
    job_name: Annotated[str, Field(max_length=63)] | None = None
    """The child Job."""
    restarts: Annotated[int, Field(ge=0)] = 0
    """Pods that failed or were preempted and replaced."""
    gpu_seconds: Annotated[float, Field(ge=0.0)] = 0.0
    """GPU time used by all pods (set when the run finishes)."""
    start_time: datetime | None = None
    """When the child Job was created; the spec is immutable from then on."""
    completion_time: datetime | None = None
    """When the run succeeded or failed."""
