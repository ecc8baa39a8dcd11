"""``stowage describe pv`` for cloud disks (AD5), and the attach/detach flags of the command line (AD3, AD4),
through the real console script against a real API server. VolumeAttachments are written through the API
as the attach/detach controller writes them."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from cliutil import Cli
from support import UpProcess, wait_for
from storage.cli.errors import CommandError
from storage.cli.up import _controller_options, parse_attach_limits

Obj = dict[str, Any]


def _line(text: str, key: str) -> str:
    for line in text.splitlines():
        match = re.match(rf"^\s*{re.escape(key)}:\s*(.*)$", line)
        if match:
            return match.group(1).rstrip()
    raise AssertionError(f"no {key!r} line in:\n{text}")


def _pv(name: str, source: Obj, *, zone_affinity: str | None = None, labels: Obj | None = None) -> Obj:
    spec: Obj = {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "ebs", **source}
    if zone_affinity:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone_affinity]}]}]}}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name, "labels": labels or {}},
            "spec": spec}


def _va(pv: str, node: str, status: Obj) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": f"va-{pv}-{node}"},
            "spec": {"attacher": "kubernetes.io/aws-ebs", "nodeName": node, "source": {"persistentVolumeName": pv}},
            "status": status}


def _attachments(out: str) -> list[list[str]]:
    section = out.split("Attachments:", 1)[1].split("Events:", 1)[0]
    return [re.split(r"\s{2,}", line.strip()) for line in section.strip().splitlines()[2:]]


def test_ad5_describe_pv_shows_the_ebs_volume_id_zone_and_attachments(cli: Cli) -> None:
    client = cli.client()
    client.create(_pv("pvc-ebs", {"awsElasticBlockStore": {"volumeID": "vol-0abc123", "fsType": "xfs"}},
                      zone_affinity="us-east-1a"))
    out = cli.ok("describe", "pv", "pvc-ebs")
    assert _line(out, "Type") == "AWSElasticBlockStore (a Persistent Disk resource in AWS)"
    assert _line(out, "VolumeID") == "vol-0abc123"
    assert _line(out, "FSType") == "xfs"
    assert _line(out, "ReadOnly") == "false"
    assert _line(out, "Zone") == "us-east-1a"
    assert _line(out, "Attachments") == "<none>"

    # One attached, one whose detach failed, one whose attach failed: each with node, state and error.
    for node, status in (("n1", {"attached": True, "attachmentMetadata": {"devicePath": "/dev/xvdba"}}),
                         ("n2", {"attached": True, "detachError": {"message": "IncorrectState: volume busy"}}),
                         ("n3", {"attached": False, "attachError": {"message": "VolumeInUse: attached to i-1"}})):
        created = client.create(_va("pvc-ebs", node, {}))
        client.update_status({**created, "status": status})
    client.create(_va("other-disk", "n1", {"attached": True}))  # another volume's: not listed
    rows = _attachments(cli.ok("describe", "pv", "pvc-ebs"))
    assert rows == [["n1", "true", "/dev/xvdba", "<none>"],
                    ["n2", "true", "-", "detach: IncorrectState: volume busy"],
                    ["n3", "false", "-", "attach: VolumeInUse: attached to i-1"]]


def test_ad5_describe_pv_gce_and_azure_with_the_legacy_zone_label(cli: Cli) -> None:
    client = cli.client()
    client.create(_pv("gce-disk", {"gcePersistentDisk": {"pdName": "pd-data-1", "fsType": "ext4"}},
                      labels={"failure-domain.beta.kubernetes.io/zone": "europe-west1-b"}))
    client.create(_pv("azure-disk", {"azureDisk": {
        "diskName": "disk-7", "kind": "Shared", "cachingMode": "ReadOnly",
        "diskURI": "https://acct.blob.core.windows.net/vhds/disk-7.vhd"}}))
    gce = cli.ok("describe", "pv", "gce-disk")
    assert _line(gce, "PDName") == "pd-data-1"
    assert _line(gce, "Zone") == "europe-west1-b"
    azure = cli.ok("describe", "pv", "azure-disk")
    assert _line(azure, "DiskName") == "disk-7"
    assert _line(azure, "DiskURI") == "https://acct.blob.core.windows.net/vhds/disk-7.vhd"
    assert _line(azure, "CachingMode") == "ReadOnly"
    assert _line(azure, "Zone") == "<none>"
    # Other volumes keep the generic source section and no attachment lines.
    client.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "nfs-share"},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                            "nfs": {"server": "nfs.example.com", "path": "/exports"}}})
    nfs = cli.ok("describe", "pv", "nfs-share")
    assert _line(nfs, "Type") == "nfs" and "Attachments:" not in nfs


def test_ad3_ad4_attach_flags_parse_and_reject_bad_values_naming_the_flag(cli: Cli) -> None:
    assert parse_attach_limits(("attachable-volumes-aws-ebs=25", "attachable-volumes-gce-pd=0")) == {
        "attachable-volumes-aws-ebs": 25, "attachable-volumes-gce-pd": 0}
    for bad in ("aws-ebs=3", "attachable-volumes-aws-ebs=-1", "attachable-volumes-aws-ebs=x",
                "attachable-volumes-=2", "attachable-volumes-aws-ebs"):
        with pytest.raises(CommandError, match="--attach-limit"):
            parse_attach_limits((bad,))
    result = cli.run("agent", "--attach-limit", "ebs=3", kubeconfig=False)
    assert result.code != 0 and "--attach-limit: Invalid value: \"ebs=3\"" in result.err
    base = {"node_monitor_grace_period": "40s", "node_eviction_rate": 0.1, "secondary_node_eviction_rate": 0.01,
            "unhealthy_zone_threshold": 0.55, "large_cluster_size_threshold": 50,
            "default_not_ready_toleration_seconds": 300, "default_unreachable_toleration_seconds": 300}
    assert _controller_options({**base, "max_wait_for_unmount": "6m"}).max_wait_for_unmount == 360.0
    assert _controller_options({**base, "max_wait_for_unmount": "2.5s"}).max_wait_for_unmount == 2.5
    with pytest.raises(CommandError, match="--attach-detach-max-wait-for-unmount"):
        _controller_options({**base, "max_wait_for_unmount": "0s"})
    shown = cli.run("up", "--help", kubeconfig=False)
    assert shown.code == 0, shown.err
    help_text = shown.out
    assert "--attach-detach-max-wait-for-unmount" in help_text and "--dev-disk-dir" in help_text
    assert "[default: 6m]" in re.sub(r"\s+", " ", help_text)


@pytest.mark.slow
def test_ad3_up_passes_attach_limits_and_dev_disk_dir_to_its_own_agent(tmp_path: Path) -> None:
    """`stowage up` builds its node agent's config from its flags: the limit shows in the Node's allocatable."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path / "home")
    dev_disk = tmp_path / "dev-disk"
    dev_disk.mkdir()
    up = UpProcess("up", ["--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
                          "--dev-disk-dir", str(dev_disk), "--attach-limit", "attachable-volumes-test=3",
                          "--attach-detach-max-wait-for-unmount", "30s"], env)
    try:
        kubeconfig = up.wait_for("stowage is ready")["kubeconfig"]
        from storage.client import Client

        client = Client.from_kubeconfig(kubeconfig)
        try:
            node = wait_for(lambda: next(iter(client.list("nodes")[0]), None), "the local node")
            assert node["status"]["allocatable"]["attachable-volumes-test"] == "3"
            assert node["status"]["capacity"]["attachable-volumes-test"] == "3"
        finally:
            client.close()
        assert up.stop() == 0
    finally:
        up.kill()
