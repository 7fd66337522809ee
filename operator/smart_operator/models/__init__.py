"""The resource models of the ``smartserver.ai/v1alpha1`` API group.

They are the single source of truth: ``crdgen`` turns them into the CRD YAML in
``crds/``, the operator parses resources with them, and the dashboard reads them.
This package must stay free of I/O and of any outside SDK.
"""

from smart_operator.models.common import GROUP, VERSION, Condition, ConditionStatus
from smart_operator.models.customer import Customer, CustomerSpec, CustomerStatus
from smart_operator.models.domain import Domain, DomainPhase, DomainSpec, DomainStatus
from smart_operator.models.experiment import (
    Experiment,
    ExperimentPhase,
    ExperimentSpec,
    ExperimentStatus,
    ExperimentType,
    HistoryCounts,
    HistoryPoint,
)
from smart_operator.models.template import (
    ClusterExperimentTemplate,
    ExperimentTemplate,
    TemplateSpec,
    ValueSpec,
)

__all__ = [
    "GROUP",
    "VERSION",
    "ClusterExperimentTemplate",
    "Condition",
    "ConditionStatus",
    "Customer",
    "CustomerSpec",
    "CustomerStatus",
    "Domain",
    "DomainPhase",
    "DomainSpec",
    "DomainStatus",
    "Experiment",
    "ExperimentPhase",
    "ExperimentSpec",
    "ExperimentStatus",
    "ExperimentTemplate",
    "ExperimentType",
    "HistoryCounts",
    "HistoryPoint",
    "TemplateSpec",
    "ValueSpec",
]
