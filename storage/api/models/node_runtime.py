"""``node.k8s.io/v1`` RuntimeClass (SEMANTICS RC1-RC4): a name for a container runtime handler, with the
pod overhead and scheduling constraints the RuntimeClass admission copies into each pod that names it."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource
from storage.api.models.pod import Toleration
from storage.api.quantity import Quantity


class Overhead(WireModel):
    pod_fixed: dict[str, Quantity] | None = None


class Scheduling(WireModel):
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None


class RuntimeClass(Resource):
    handler: str | None = None
    overhead: Overhead | None = None
    scheduling: Scheduling | None = None
