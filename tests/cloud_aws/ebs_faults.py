"""Fault injection for the EBS tests: errors answered in moto's place through a botocore event hook on the
provisioner's own client (so botocore's retry handler sees them exactly as from AWS), and slow transitions
made by holding moto's own volume and attachment state."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import pytest
from botocore.awsrequest import AWSResponse
from moto.ec2.models.elastic_block_store import EBSBackend, Volume


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def ec2_error(code: str, message: str, status: int = 400) -> AWSResponse:
    body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>injected</RequestID></Response>").encode()
    return AWSResponse("http://injected", status, {"Content-Type": "text/xml"}, _Raw(body))


class InjectedErrors:
    """``count`` answers ``code`` to operation ``op`` (e.g. "CreateVolume"), then the real server again."""

    def __init__(self, client: Any, op: str, code: str, count: int, status: int = 400) -> None:
        self.op, self.code, self.remaining, self.status = op, code, count, status
        self.calls = 0  # every attempt botocore sent, injected or not
        self._lock = threading.Lock()
        client.meta.events.register(f"before-send.ec2.{op}", self._hook)
        self._client = client

    def _hook(self, **_: Any) -> AWSResponse | None:
        with self._lock:
            self.calls += 1
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        return ec2_error(self.code, f"injected {self.code}", self.status)

    def remove(self) -> None:
        self._client.meta.events.unregister(f"before-send.ec2.{self.op}", self._hook)


@contextlib.contextmanager
def inject(client: Any, op: str, code: str, count: int, status: int = 400) -> Iterator[InjectedErrors]:
    injected = InjectedErrors(client, op, code, count, status)
    try:
        yield injected
    finally:
        injected.remove()


class Transitions:
    """Hold moto's volumes in ``creating`` and new attachments in ``attaching`` (moto finishes both at once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.creating: set[str] = set()
        self.hold_new_volumes = False
        self.hold_attach = False
        self.attaching: list[Any] = []
        self.hold_detach = False
        self.detaching: list[Volume] = []
        original_status = Volume.status.fget
        transitions = self

        def status(volume: Volume) -> str:
            return "creating" if volume.id in transitions.creating else original_status(volume)

        original_create = EBSBackend.create_volume
        original_attach = EBSBackend.attach_volume

        def create_volume(backend: EBSBackend, *args: Any, **kwargs: Any) -> Volume:
            volume = original_create(backend, *args, **kwargs)
            if transitions.hold_new_volumes:
                transitions.creating.add(volume.id)
            return volume

        def attach_volume(backend: EBSBackend, *args: Any, **kwargs: Any) -> Any:
            attachment = original_attach(backend, *args, **kwargs)
            if transitions.hold_attach and attachment is not None:
                attachment.status = "attaching"
                transitions.attaching.append(attachment)
            return attachment

        original_detach = EBSBackend.detach_volume

        def detach_volume(backend: EBSBackend, volume_id: str, *args: Any, **kwargs: Any) -> Any:
            volume = backend.get_volume(volume_id)
            attachment = volume.attachment
            result = original_detach(backend, volume_id, *args, **kwargs)
            if transitions.hold_detach and attachment is not None:
                attachment.status = "detaching"  # still listed on the volume until finish_detaching()
                volume.attachment = attachment
                transitions.detaching.append(volume)
            return result

        monkeypatch.setattr(EBSBackend, "detach_volume", detach_volume)
        monkeypatch.setattr(Volume, "status", property(status))
        monkeypatch.setattr(EBSBackend, "create_volume", create_volume)
        monkeypatch.setattr(EBSBackend, "attach_volume", attach_volume)

    def finish_creating(self) -> None:
        self.hold_new_volumes = False
        self.creating.clear()

    def finish_detaching(self) -> None:
        self.hold_detach = False
        for volume in self.detaching:
            volume.attachment = None
        self.detaching.clear()

    def finish_attaching(self) -> None:
        self.hold_attach = False
        for attachment in self.attaching:
            attachment.status = "attached"
        self.attaching.clear()
