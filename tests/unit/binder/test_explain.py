"""explain_pending_claim: the reason `stowage describe pvc` shows for a Pending claim (B3, B4, B7, P2)."""
from __future__ import annotations

from storage.controllers.explain import explain_pending_claim

from test_index import pv, pvc  # type: ignore[import-not-found]


def test_no_volume_of_that_class():
    assert "no volume of storage class \"gold\"" in explain_pending_claim(pvc(cls="gold"), [pv("a")], [])


def test_too_small():
    text = explain_pending_claim(pvc(size="5Gi"), [pv("a", size="1Gi")], [])
    assert "too small" in text and '"a"' in text


def test_selector_mismatch():
    text = explain_pending_claim(pvc(selector={"matchLabels": {"tier": "gold"}}), [pv("a", labels={"tier": "x"})], [])
    assert "selector" in text


def test_waiting_for_first_consumer():
    cls = {"metadata": {"name": "late"}, "provisioner": "p", "volumeBindingMode": "WaitForFirstConsumer"}
    assert explain_pending_claim(pvc(cls="late"), [], [cls]).startswith("waiting for first consumer")


def test_provisioning_failed_with_backend_message():
    cls = {"metadata": {"name": "c"}, "provisioner": "p"}
    events = [{"reason": "ProvisioningFailed", "message": 'failed to provision volume with StorageClass "c": quota exceeded'}]
    assert explain_pending_claim(pvc(cls="c"), [], [cls], events).endswith("quota exceeded")


def test_access_modes():
    assert "access modes" in explain_pending_claim(pvc(modes=("ReadWriteMany",)), [pv("a")], [])
