"""EBS names both sides read: the volume id of an ``awsElasticBlockStore`` source, and a partition's device name."""
from __future__ import annotations

import re

from storage.errors import PermanentError

_VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")


def parse_volume_id(value: str) -> tuple[str, str | None]:
    """``vol-123`` or Kubernetes' ``aws://<zone>/vol-123`` (zone may be empty) -> (volume id, zone or None)."""
    text = (value or "").strip()
    zone: str | None = None
    if text.startswith("aws://"):
        zone_part, _, volume = text[len("aws://"):].partition("/")
        zone, text = (zone_part or None), volume
    if not _VOLUME_ID.match(text):
        raise PermanentError(f'awsElasticBlockStore.volumeID: Invalid value: "{value}": '
                             "expected vol-<hex id> or aws://<zone>/vol-<hex id>")
    return text, zone


def partition_path(device: str, partition: int) -> str:
    """``/dev/nvme1n1`` + 1 -> ``/dev/nvme1n1p1``; ``/dev/xvdba`` + 1 -> ``/dev/xvdba1`` (kernel naming)."""
    return f"{device}p{partition}" if device[-1:].isdigit() else f"{device}{partition}"
