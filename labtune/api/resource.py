"""The envelope every labtune.io kind shares, and the facts about a kind that only its CRD needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from labtune.api.base import API_VERSION, ApiModel


@dataclass(frozen=True)
class PrinterColumn:
    """An `additionalPrinterColumns` entry of the CRD (what `kubectl get` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    priority: int = 0
    description: str = ""


class Resource(ApiModel):
    """apiVersion, kind and metadata of a labtune.io object; subclasses add `kind`, `spec`, `status`
    and the class-level facts the CRD generator reads."""

    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    printer_columns: ClassVar[tuple[PrinterColumn, ...]]
    # Spec fields that may change after status.startTime is set; None: the spec stays mutable.
    mutable_after_start: ClassVar[frozenset[str] | None] = None
    # Spec fields that may never change, not even before the start (set or unset included).
    immutable: ClassVar[frozenset[str]] = frozenset()

    api_version: str = API_VERSION
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def kind_name(cls) -> str:
        default = cls.model_fields["kind"].default
        assert isinstance(default, str), f"{cls.__name__} must declare kind as a Literal with a default"
        return default
