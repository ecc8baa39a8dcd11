"""persistentVolumeClaim: resolved by the caller to the bound PV's spec, then handled by that PV's plugin.

The agent reads the claim and its bound volume through the API and passes the
volume's spec as the source; this plugin only catches a claim reference that
reached the node unresolved, with a message saying what is missing.
"""
from __future__ import annotations

from pathlib import Path

from storage.errors import TemporaryError
from volume_plugins.base import VolumeContext, VolumePlugin


class PersistentVolumeClaimPlugin(VolumePlugin):
    name = "kubernetes.io/persistent-claim"
    source_key = "persistentVolumeClaim"

    def setup(self, ctx: VolumeContext) -> Path:
        claim = self.spec(ctx.source).get("claimName", "")
        raise TemporaryError(
            f'persistentvolumeclaim "{claim}" in namespace "{ctx.pod_namespace}" is not bound to a volume yet',
            delay=2.0,
        )
