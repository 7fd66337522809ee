"""Building blocks shared by every resource: the API group, camelCase models,
conditions shaped like ``metav1.Condition``, and the CRD metadata each kind declares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "smartserver.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A DNS-1123 label, the shape of every Kubernetes object name we derive from.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A fully qualified domain name: labels of 1-63 characters, at least two labels,
# an alphabetic top-level label (the length bound is a separate maxLength, as
# the API server's RE2 patterns have no look-ahead). Lower case only, as DNS is case-insensitive and
# the resource name is derived from it.
DOMAIN_PATTERN = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"

ConditionStatus = Literal["True", "False", "Unknown"]


class CamelModel(BaseModel):
    """A model whose wire names are camelCase, as every Kubernetes API field is."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=False
    )


class Writer(StrEnum):
    """Who writes a part of a status. Each part has exactly one writer, so two
    processes never fight over a field (a merge patch replaces what it names)."""

    OPERATOR = "operator"
    INTAKE = "intake"
    """The results intake: agents' heartbeats and reports."""


class StatusModel(CamelModel):
    """A status whose fields are owned by writers: ``WRITERS`` names the fields (by
    attribute name) that a writer other than the operator owns; the rest are the
    operator's. Each writer patches only its own fields."""

    WRITERS: ClassVar[Mapping[str, Writer]] = {}

    @classmethod
    def fields_of(cls, writer: Writer) -> frozenset[str]:
        """The wire (camelCase) names of the fields ``writer`` owns."""
        return frozenset(
            info.alias or name
            for name, info in cls.model_fields.items()
            if cls.WRITERS.get(name, Writer.OPERATOR) is writer
        )

    def dump_of(self, writer: Writer) -> dict[str, Any]:
        """The fields ``writer`` owns, as JSON without empty values."""
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        owned = self.fields_of(writer)
        return {key: value for key, value in dumped.items() if key in owned}


class Condition(CamelModel):
    """One observation of the resource's state, shaped like ``metav1.Condition``."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=316)
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime


def list_map(key: str) -> dict[str, Any]:
    """Schema extras that make the API server treat a list as a map keyed by ``key``:
    keys must be unique, and server-side apply merges items by key."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


def conditions_field() -> Any:
    """The ``conditions`` list every status carries, one entry per type."""
    return Field(default_factory=list, json_schema_extra=list_map("type"))


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry shown by ``kubectl get``."""

    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class KindInfo:
    """What the CRD of a resource declares besides its schema."""

    kind: str
    plural: str
    scope: Literal["Namespaced", "Cluster"]
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = ("smartserver",)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


READY_COLUMN = PrinterColumn(
    name="Ready",
    json_path='.status.conditions[?(@.type=="Ready")].status',
    description="Whether the resource has reached its desired state",
)
AGE_COLUMN = PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date")


class ObjectMeta(CamelModel):
    """The part of ``metadata`` the operator reads."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(CamelModel):
    """Base of the three kinds: apiVersion, kind, metadata, and the CRD facts."""

    KIND: ClassVar[KindInfo]
    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta
