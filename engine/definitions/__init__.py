"""Feature definitions: entities, sources, views, on-demand views, services, repos.

Imports no Bytewax, Kafka or RocksDB; numpy comes with filter evaluation and the kernel's
function list (engine/kernel/layout.py owns it).
"""

from engine.definitions.aggregation import Aggregation
from engine.definitions.base import FieldType, FrozenMap
from engine.definitions.check import check_on_demand, sample_row
from engine.definitions.constraint import Constraint
from engine.definitions.entity import Entity
from engine.definitions.exceptions import (
    DefinitionError,
    DefinitionTypeError,
    OnDemandCheckError,
    PlanError,
    PlanMismatchError,
    RepoValidationError,
)
from engine.definitions.feature_ref import FeatureRef
from engine.definitions.filters import Expr, col
from engine.definitions.on_demand import OnDemandFeatureView, on_demand_feature_view
from engine.definitions.repo import FeatureRepo, load_repo
from engine.definitions.service import FeatureService
from engine.definitions.source import EventSource, RequestSource
from engine.definitions.view import StreamFeatureView
from engine.io.timestamps import TIMESTAMP_FORMATS
from engine.kernel.layout import FUNCTIONS

__all__ = [
    "FUNCTIONS",
    "TIMESTAMP_FORMATS",
    "Aggregation",
    "Constraint",
    "DefinitionError",
    "DefinitionTypeError",
    "Entity",
    "EventSource",
    "Expr",
    "FeatureRef",
    "FeatureRepo",
    "FeatureService",
    "FieldType",
    "FrozenMap",
    "OnDemandCheckError",
    "OnDemandFeatureView",
    "PlanError",
    "PlanMismatchError",
    "RepoValidationError",
    "RequestSource",
    "StreamFeatureView",
    "check_on_demand",
    "col",
    "load_repo",
    "on_demand_feature_view",
    "sample_row",
]
