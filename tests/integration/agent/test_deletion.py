"""Deleting pods and their claims through the real agent (runc pods, loop devices, kubectl):
grace periods (G1-G4), force deletion (G2), claims held by pod objects (B11), finished pods'
volumes (A1), and devices holding another filesystem (A4)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Callable

import pytest

from agent_cluster import Cluster, claim, condition, local_class, pod, wait_until
from provisioners import registry as provisioner_registry
from provisioners.hostpath import HostPathProvisioner
from storage.agent.agent import AGENT_FINALIZER, NodeAgent
from storage.errors import BackendConflict, Conflict, NotFound
from storage.system import blockdev, loop, mounts
from support import kubectl_binary
from tcp_relay import TcpRelay

STUBBORN = "trap '' TERM; while true; do sleep 1; done"  # ignores SIGTERM: only SIGKILL ends it
IMMEDIATE = b"Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated."


def kubectl(cluster: Cluster, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(cluster.server.kubeconfig)
    # The timeout is far below the pods' 600 s grace: a deletion that waits it out fails here.
    return subprocess.run([kubectl_binary(), *args], input=input, capture_output=True, timeout=120, env=env)


def containers_of(agent: NodeAgent, uid: str) -> list[dict]:
    assert agent.runtime is not None
    return [c for c in agent.runtime.settings.runc.list() if uid in c.get("id", "")]


def full_pass(agent: NodeAgent) -> None:
    """One whole-node pass of the agent (what a relist brings), done."""
    before = agent.request_full_sync()
    wait_until(lambda: agent.full_passes > before, "a whole-node pass of the agent")


def paths_named(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob("*") if name in p.name]


def node_status(cluster: Cluster) -> str:
    out = kubectl(cluster, "get", "nodes", "--no-headers")
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().split()[1]


def test_g2_g3_g4_kubectl_shortens_then_force_deletes_and_the_agent_stops_the_containers(cluster: Cluster) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    # kubectl's STATUS column: Ready, and Ready,SchedulingDisabled while cordoned.
    assert node_status(cluster) == "Ready"
    assert kubectl(cluster, "cordon", "n1").returncode == 0
    assert node_status(cluster) == "Ready,SchedulingDisabled"
    assert kubectl(cluster, "uncordon", "n1").returncode == 0

    cluster.apply(local_class(), claim("data"), pod("slow", STUBBORN, grace=600),
                  pod("forced", STUBBORN, claims={"data": "/data"}, grace=600))
    slow = cluster.wait_running("slow")["metadata"]["uid"]
    forced = cluster.wait_running("forced")["metadata"]["uid"]
    pv_name = cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"]

    # G1/G4: the pod's own 600 s; SIGTERM is ignored, so it stays Terminating and running.
    marked = cluster.client.delete("pods", "slow", "default")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 600
    assert cluster.pod("slow")["metadata"]["deletionTimestamp"]
    assert [c["status"] for c in containers_of(agent, slow)] == ["running"]
    # G3: a shorter grace is honoured by the agent already stopping it; kubectl waits until it is gone.
    shortened = kubectl(cluster, "delete", "pod", "slow", "--grace-period=1")
    assert shortened.returncode == 0, shortened.stderr
    assert shortened.stdout.startswith(b'pod "slow" deleted')  # newer kubectl adds "from default namespace"
    wait_until(lambda: not containers_of(agent, slow), "the shortened pod's container to be gone")

    # G2: --force --grace-period=0 removes the object at once, past the agent's finalizer; kubectl
    # prints the warning itself. The agent then stops what it still runs and unmounts its volume.
    done = kubectl(cluster, "delete", "pod", "forced", "--force", "--grace-period=0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b'pod "forced" force deleted')
    assert IMMEDIATE in done.stderr
    with pytest.raises(NotFound):
        cluster.pod("forced")
    wait_until(lambda: not containers_of(agent, forced), "the force-deleted pod's container to be stopped")
    wait_until(lambda: not (cluster.agent_dir("n1") / "pods" / forced).exists(), "the pod's directory to be removed")
    assert not mounts.mounts_under(cluster.agent_dir("n1") / "pods")

    # No pod names the claim any more: it goes with its volume, and nothing of that comes back.
    cluster.client.delete("persistentvolumeclaims", "data", "default")
    cluster.wait_gone("persistentvolumes", pv_name)
    wait_until(lambda: not paths_named(cluster.pool_dir("n1"), pv_name), "the pool volume's files to be gone")
    full_pass(agent)
    assert not paths_named(cluster.base, pv_name)


def test_g2_force_delete_while_the_node_is_down_stops_the_container_when_it_returns(cluster: Cluster) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply(pod("orphan", grace=2))
    uid = cluster.wait_running("orphan")["metadata"]["uid"]
    cluster.stop_agent("n1")  # its containers keep running, as a node that lost its agent
    assert [c["status"] for c in containers_of(agent, uid)] == ["running"]
    # The agent's finalizer does not hold a force deletion: the object is gone with the node down.
    cluster.client.delete("pods", "orphan", "default", grace_period_seconds=0)
    with pytest.raises(NotFound):
        cluster.pod("orphan")
    assert [c["status"] for c in containers_of(agent, uid)] == ["running"]
    back = cluster.add_agent("n1")
    wait_until(lambda: not containers_of(back, uid), "the returning agent to stop the orphan")
    wait_until(lambda: not (cluster.agent_dir("n1") / "pods" / uid).exists(), "the orphan's directory to be removed")


def test_l12_an_agent_cut_off_from_its_server_resumes_its_watch_and_honours_a_force_deletion_made_meanwhile(
        cluster: Cluster) -> None:
    """L12: a watch whose connection is reset (the server restarts, the link drops) is resumed from the last
    revision delivered, after a short back-off: the agent learns that a pod was force-deleted meanwhile, with
    its grace of 0, and stops it at once. A relist would have only told it the pod was gone, to be stopped
    within its own 600 s."""
    cluster.start_controllers()
    relay = TcpRelay(cluster.server.port)
    try:
        agent = cluster.add_agent("n1", via_port=relay.port)
        cluster.apply(pod("forced", STUBBORN, grace=600))
        uid = cluster.wait_running("forced")["metadata"]["uid"]
        passes = agent.full_passes
        relay.drop()
        cluster.client.delete("pods", "forced", "default", grace_period_seconds=0)
        with pytest.raises(NotFound):
            cluster.pod("forced")
        assert [c["status"] for c in containers_of(agent, uid)] == ["running"]
        relay.restore()
        wait_until(lambda: not containers_of(agent, uid), "the force-deleted pod stopped with its grace of 0", 60)
        assert agent.full_passes == passes, "the agent relisted instead of resuming its watch"
        wait_until(lambda: condition(cluster.client.get("nodes", "n1"), "Ready") == "True", "node n1 Ready")
    finally:
        cluster.stop_agent("n1")
        relay.close()


def test_l13_a_status_write_answered_after_the_watch_reported_the_pod_deleted_does_not_bring_it_back(
        cluster: Cluster) -> None:
    """L13: the agent's write of a pod's status succeeds, but its answer comes back only after the watch has
    reported the pod force-deleted (the request was held up, as over a link that was cut and restored).
    The agent used to keep the written copy as the pod's latest state, which brought the deleted pod back
    into its view: it was never stopped and kept its volumes (the multi-host recovery test saw this)."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply(pod("late", STUBBORN, grace=600))
    uid = cluster.wait_running("late", ready=True)["metadata"]["uid"]
    real_update_status = agent.client.update_status
    fired = threading.Event()

    def answered_late(obj: dict, *args: object, **kwargs: object) -> dict:
        saved = real_update_status(obj, *args, **kwargs)
        if (obj.get("metadata") or {}).get("uid") == uid and not fired.is_set():
            fired.set()
            cluster.client.delete("pods", "late", "default", grace_period_seconds=0)
            wait_until(lambda: uid not in agent.known_pods(), "the watch to report the pod deleted")
        return saved

    agent.client.update_status = answered_late  # type: ignore[method-assign]
    # What the node lifecycle controller does to a silent node's pods: the agent says again what is true.
    marked = cluster.pod("late")
    marked["status"]["conditions"] = [{**c, "status": "False"} if c["type"] == "Ready" else c
                                      for c in marked["status"]["conditions"]]
    try:
        cluster.client.update_status(marked)
    except NotFound:
        # A status write the agent made of its own accord (a second look at a pod that just started) was
        # answered late first: the same scenario, played before this nudge.
        assert fired.is_set(), "the pod went without the agent's late answer"
    wait_until(fired.is_set, "the agent's status write")
    wait_until(lambda: not containers_of(agent, uid), "the force-deleted pod stopped", 60)
    assert uid not in agent.known_pods()


def test_g1_a_deletion_the_agent_learns_from_its_own_write_before_its_watch_still_stops_the_pod(
        cluster: Cluster) -> None:
    """G1: the answer to one of the agent's writes may bring a pod's deletion before the watch does. The
    agent kept that copy, and the watch's event then differed from it only in status, so no pass stopped
    the pod. Here the watch is held (a frozen relay) while the agent's write returns the deleted pod."""
    cluster.start_controllers()
    relay = TcpRelay(cluster.server.port)
    try:
        agent = cluster.add_agent("n1", via_port=relay.port)
        cluster.apply(pod("early", STUBBORN, grace=1))
        uid = cluster.wait_running("early")["metadata"]["uid"]
        relay.frozen.set()
        cluster.client.delete("pods", "early", "default")  # graceful: the object stays, Terminating
        agent._remember(cluster.pod("early"))  # what the agent's next status write would return
        relay.restore()
        wait_until(lambda: not containers_of(agent, uid), "the deleted pod stopped", 60)
    finally:
        relay.restore()
        cluster.stop_agent("n1")
        relay.close()


def test_l10_the_pools_in_use_answer_reaches_the_controllers_as_a_backend_refusal_not_a_store_conflict(
        cluster: Cluster) -> None:
    """L10: the agent answers 409 while a pod has the pool volume mounted; the local provisioner hands it on as
    ``BackendConflict``, which the controller manager retries with back-off, not as ``Conflict`` (a write
    race of the store, retried at once: the delete, expand or snapshot call went round in a tight loop)."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class(), claim("data"), pod("user", claims={"data": "/data"}))
    cluster.wait_running("user")
    pv = cluster.client.get("persistentvolumes", cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"])
    local = provisioner_registry.get("stowage.io/local")
    assert local is not None
    with pytest.raises(BackendConflict, match=f"pool volume {pv['metadata']['name']} is in use") as refused:
        local.delete(pv)
    assert not isinstance(refused.value, Conflict)
    assert cluster.wait_running("user")["metadata"]["uid"]  # the refusal changed nothing


def test_b11_a1_a_finished_pod_holds_its_claims_keeps_no_volume_and_nothing_deleted_reappears(cluster: Cluster) -> None:
    """B11: a Succeeded pod's object holds its claim. A1: a finished pod keeps its logs, not its volumes,
    and its volumes are never set up again: a claim taken away under it (a user removed the protection)
    takes its hostPath directory along, and no later pass of the agent creates that directory anew."""
    cluster.start_controllers()
    root = cluster.base / "hostpath"
    root.mkdir()
    hostpath = HostPathProvisioner(root, node="n1")
    provisioner_registry.register(hostpath)
    try:
        agent = cluster.add_agent("n1", host_path_prefixes=(str(root),))
        cluster.apply(
            local_class(),
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "hp"},
             "provisioner": hostpath.name, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"},
            claim("data"), claim("scratch", storage_class="hp"),
            pod("job", "echo done > /data/out; echo x > /scratch/x; echo finished", claims={"data": "/data", "scratch": "/scratch"},
                restartPolicy="Never"))
        uid = cluster.wait_pod("job", lambda p: p["status"].get("phase") == "Succeeded", "Succeeded")["metadata"]["uid"]
        data_pv = cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"]
        scratch_pv = cluster.client.get("persistentvolumeclaims", "scratch", "default")["spec"]["volumeName"]
        scratch_dir = root / scratch_pv
        assert (scratch_dir / "x").read_text() == "x\n"
        pod_dir = cluster.agent_dir("n1") / "pods" / uid
        # A1: published Succeeded only once its volumes are released; its log stays.
        assert not mounts.mounts_under(pod_dir)
        assert not list((pod_dir / "volumes").glob("*/*"))
        assert (pod_dir / "logs").is_dir()

        # B11: the finished pod's object still names both claims, so they stay Terminating...
        cluster.client.delete("persistentvolumeclaims", "data", "default")
        cluster.client.delete("persistentvolumeclaims", "scratch", "default")
        # ...until a user takes the protection off one (the usual way to unstick a claim): it goes at
        # once, its volume with it, and the provisioner removes the volume's directory.
        scratch = cluster.client.get("persistentvolumeclaims", "scratch", "default")
        assert scratch["metadata"]["deletionTimestamp"]
        scratch["metadata"]["finalizers"] = []
        cluster.client.update(scratch)
        cluster.wait_gone("persistentvolumes", scratch_pv)
        assert not scratch_dir.exists()
        full_pass(agent)
        assert not scratch_dir.exists(), "the agent created a deleted volume's directory again"
        assert cluster.pod("job")["status"]["phase"] == "Succeeded"
        # Meanwhile the claim the pod still names has stayed, Terminating, with its volume.
        assert cluster.client.get("persistentvolumeclaims", "data", "default")["metadata"]["deletionTimestamp"]
        assert cluster.client.get("persistentvolumes", data_pv)["status"]["phase"] == "Bound"

        # G1: a finished pod goes at once; then its claim and volume follow.
        cluster.client.delete("pods", "job", "default")
        with pytest.raises(NotFound):
            cluster.pod("job")
        cluster.wait_gone("persistentvolumeclaims", "data", "default")
        cluster.wait_gone("persistentvolumes", data_pv)
        wait_until(lambda: not paths_named(cluster.pool_dir("n1"), data_pv), "the pool volume's files to be gone")
        full_pass(agent)
        assert not paths_named(cluster.base, data_pv) and not paths_named(cluster.base, scratch_pv)
    finally:
        provisioner_registry.unregister(hostpath.name)


def _sha256(dev: str) -> str:
    digest = hashlib.sha256()
    with open(dev, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_a4_a_device_holding_another_filesystem_is_never_formatted_nor_mounted(cluster: Cluster) -> None:
    """A4: xfs on the device, the volume asks ext4 (or no fsType, which means ext4): FailedMount in the
    kubelet's words, the pod waits in ContainerCreating, the device is untouched."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    devices = {}
    for name, fs_type in (("xfs-as-ext4", "ext4"), ("xfs-no-fstype", None)):
        image = cluster.base / "disks" / f"{name}.img"
        image.parent.mkdir(exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(320 << 20)  # mkfs.xfs needs 300 MiB
        dev = loop.attach(image)
        subprocess.run(["mkfs.xfs", "-q", dev], check=True)
        devices[name] = dev
        local = {"path": dev, **({"fsType": fs_type} if fs_type else {})}
        cluster.apply(
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
             "spec": {"capacity": {"storage": "300Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                      "persistentVolumeReclaimPolicy": "Retain", "local": local,
                      "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                          {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}},
            {**claim(f"c-{name}", storage_class=""), "spec": {**claim(f"c-{name}", storage_class="")["spec"], "volumeName": name}})
    before = {name: _sha256(dev) for name, dev in devices.items()}
    cluster.apply(pod("mounter", claims={"c-xfs-as-ext4": "/a", "c-xfs-no-fstype": "/b"}))

    def failed_mounts() -> list[str] | None:
        found = sorted({e["message"] for e in cluster.events_for("mounter") if e.get("reason") == "FailedMount"})
        return found if len(found) == 2 else None

    messages = wait_until(failed_mounts, "a FailedMount event for each volume")
    for message, name in zip(messages, sorted(devices)):
        assert message.startswith(
            f'MountVolume.MountDevice failed for volume "{name}" : failed to mount the volume as "ext4", '
            "it already contains xfs. Mount error: mount failed: exit status 32\nMounting command: mount\n"
            f"Mounting arguments: -t ext4 {devices[name]} "), message
    waiting = cluster.pod("mounter")
    assert waiting["status"]["phase"] == "Pending"
    assert waiting["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    for name, dev in devices.items():
        assert not mounts.mounts_of_device(dev)
        assert blockdev.probe_filesystem(dev) == "xfs"
    cluster.client.delete("pods", "mounter", "default", grace_period_seconds=0)
    cluster.wait_gone("pods", "mounter", "default")
    assert {name: _sha256(dev) for name, dev in devices.items()} == before, "the devices must not be written"


def _recorded(outcomes: list[str], write: Callable[..., dict], *args: object, **kwargs: object) -> dict:
    """``write(*args, **kwargs)``, noting "ok", "409" or the name of any other error in ``outcomes`` (a
    timeout or a 5xx under load must show in the assertion's message, not as a write that never was)."""
    try:
        saved = write(*args, **kwargs)
    except Conflict:
        outcomes.append("409")
        raise
    except Exception as exc:
        outcomes.append(type(exc).__name__)
        raise
    outcomes.append("ok")
    return saved


def test_l14_a_pod_that_starts_gets_one_status_write_even_when_two_workers_push_it(cluster: Cluster) -> None:
    """L14: a sync worker pushes the status of the pod it just started while the main worker, woken by
    the echo of the pod's Pending write, pushes the same status. Both read the same revision: one got a
    409, then a GET and a second write of the same status. Here the first Running write is held for a
    moment so that a second pusher, if it can run at once, surely does."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    real_update_status = agent.client.update_status
    guard = threading.Lock()
    outcomes: list[str] = []
    started: list[str] = []
    another = threading.Event()

    def held(obj: dict, *args: object, **kwargs: object) -> dict:
        if (obj.get("metadata") or {}).get("name") != "starting" or (obj.get("status") or {}).get("phase") != "Running":
            return real_update_status(obj, *args, **kwargs)
        with guard:
            started.append(obj["metadata"]["resourceVersion"])
            first = len(started) == 1
        if first:
            another.wait(2)  # a second Running write starting now would race this one
        else:
            another.set()
        return _recorded(outcomes, real_update_status, obj, *args, **kwargs)

    agent.client.update_status = held  # type: ignore[method-assign]
    cluster.apply(pod("starting", STUBBORN, grace=1))
    cluster.wait_running("starting", ready=True)
    full_pass(agent)
    full_pass(agent)  # any push the start set off is done by the end of the second pass
    assert outcomes == ["ok"], f"Running status writes of revisions {started}: {outcomes}"


def test_l15_a_stopped_pod_loses_its_finalizer_without_a_get_and_a_stale_copy_is_retried(cluster: Cluster) -> None:
    """L15: the finalizer goes in one write from the copy the final status write refreshed. A copy made
    stale behind the agent's back (another writer) gets a 409, then a GET and a write that succeeds."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    real_get, real_update = agent.client.get, agent.client.update
    gets: list[str] = []
    finalizer_writes: list[str] = []

    def counted_get(resource: str, name: str, *args: object, **kwargs: object) -> dict:
        if resource == "pods" and name in ("quiet", "raced"):
            gets.append(name)
        return real_get(resource, name, *args, **kwargs)

    def counted_update(obj: dict, *args: object, **kwargs: object) -> dict:
        meta = obj.get("metadata") or {}
        if obj.get("kind", "Pod") == "Pod" and meta.get("name") in ("quiet", "raced") and meta.get("deletionTimestamp"):
            return _recorded(finalizer_writes, real_update, obj, *args, **kwargs)
        return real_update(obj, *args, **kwargs)

    agent.client.get = counted_get  # type: ignore[method-assign]
    agent.client.update = counted_update  # type: ignore[method-assign]

    cluster.apply(pod("quiet", grace=30))
    cluster.wait_running("quiet", ready=True)
    gets.clear()
    cluster.client.delete("pods", "quiet", "default")
    cluster.wait_gone("pods", "quiet", "default")
    assert finalizer_writes == ["ok"] and gets == [], (finalizer_writes, gets)

    # Another writer changes the pod between the agent's last look and its finalizer write.
    cluster.apply(pod("raced", grace=30))
    cluster.wait_running("raced", ready=True)
    real_push = agent._push_status

    def push_then_label(p: dict, *args: object, **kwargs: object) -> None:
        real_push(p, *args, **kwargs)
        if (p.get("metadata") or {}).get("name") != "raced" or not kwargs.get("force"):
            return
        uid = p["metadata"]["uid"]
        stale = agent._pods[uid]
        live = cluster.client.get("pods", "raced", "default")
        live["metadata"].setdefault("labels", {})["touched"] = "yes"
        cluster.client.update(live)
        # Once the watch has brought the change, the agent is handed back the copy from before it.
        wait_until(lambda: ((agent._pods.get(uid) or {}).get("metadata") or {}).get("labels", {}).get("touched"),
                   "the label change reaches the agent", 30)
        agent._pods[uid] = stale

    agent._push_status = push_then_label  # type: ignore[method-assign]
    finalizer_writes.clear()
    gets.clear()
    cluster.client.delete("pods", "raced", "default")
    cluster.wait_gone("pods", "raced", "default")
    # The stale copy's write is refused and the agent looks again. Under load its pod loop's own idempotent
    # pass (which writes from the watched copy) may remove the finalizer first; the retry's GET then finds the
    # pod gone and writes nothing. Either way one GET, and the pod is gone.
    assert finalizer_writes in (["409", "ok"], ["409"]) and gets == ["raced"], (finalizer_writes, gets)


class _WatchLag(dict):  # type: ignore[type-arg]
    """The agent's watched pods, where one pod's finalizer removal and deletion are not delivered yet."""

    def __init__(self, pods: dict, uid: str) -> None:
        super().__init__(pods)
        self.uid = uid
        self.held = True

    def __setitem__(self, key: str, value: dict) -> None:
        finalizers = (value.get("metadata") or {}).get("finalizers") or []
        if not (self.held and key == self.uid and AGENT_FINALIZER not in finalizers):
            super().__setitem__(key, value)

    def pop(self, key: str, *default: object) -> object:
        if self.held and key == self.uid:
            return self.get(key, *default)
        return super().pop(key, *default)


def test_l15_a_finalizer_removal_that_went_through_is_not_written_again_and_one_that_gave_up_is(
        cluster: Cluster) -> None:
    """L15: once the agent's finalizer removal has gone through, passes that still see the finalizer in
    the watched copy (the removal not back through the watch yet) write nothing. A StatefulSet's next
    member takes the name at once, so such a write was refused, and the pass that would start the new
    member waited for its round trip. A removal that lost every race is tried again by the next pass."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    real_update = agent.client.update
    writes: list[str] = []
    refuse = [0]

    def counted_update(obj: dict, *args: object, **kwargs: object) -> dict:
        meta = obj.get("metadata") or {}
        if obj.get("kind", "Pod") != "Pod" or meta.get("name") != "again" or not meta.get("deletionTimestamp"):
            return real_update(obj, *args, **kwargs)
        if refuse[0] > 0:
            refuse[0] -= 1
            writes.append("409-injected")
            raise Conflict("pods", "again", "the object has been modified")
        try:
            saved = real_update(obj, *args, **kwargs)
        except Exception as exc:
            writes.append(type(exc).__name__)
            raise
        writes.append("ok")
        return saved

    agent.client.update = counted_update  # type: ignore[method-assign]
    for round_, refused in (("went through", 0), ("gave up", 10)):
        cluster.apply(pod("again", grace=30))
        uid = cluster.wait_running("again", ready=True)["metadata"]["uid"]
        with agent._lock:
            lag = agent._pods = _WatchLag(agent._pods, uid)
        writes.clear()
        refuse[0] = refused
        cluster.client.delete("pods", "again", "default")
        wait_until(lambda: uid in agent._stopped, "the agent stops the pod", 60)
        cluster.wait_gone("pods", "again", "default")
        full_pass(agent)
        full_pass(agent)
        # The watched copy still shows the finalizer: written again only where the removal gave up.
        assert AGENT_FINALIZER in lag[uid]["metadata"]["finalizers"] and lag[uid]["metadata"]["deletionTimestamp"]
        if refused:  # the stop's removal lost every race; a pass wrote again (from the held copy: refused if stale)
            assert writes[:10] == ["409-injected"] * 10 and writes[10:] in (["ok"], ["Conflict", "ok"]), (round_, writes)
        else:
            assert writes == ["ok"], (round_, writes)
        with agent._lock:
            agent._pods = dict(lag)  # the watch delivers the deletion
            agent._pods.pop(uid, None)
            agent.referenced.pod_gone(uid)
            agent._dirty.add(uid)
            agent._lock.notify_all()
        full_pass(agent)
        assert uid not in agent._stopped and uid not in agent._unfinalized


FREEZER = Path("/sys/fs/cgroup/freezer")


def test_g1_a_container_sigkill_cannot_end_keeps_its_pod_terminating_and_its_volume_until_it_ends(
        cluster: Cluster) -> None:
    """A container whose processes SIGKILL cannot end (asleep in the kernel, as on a hung mount; here a
    frozen cgroup v1 freezer group) is not reported stopped: its pod stays Terminating with a Warning
    FailedKillPod, its volume stays set up, and the agent keeps starting other pods. Once the processes
    can die, the stop is retried and finishes."""
    if not (FREEZER / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 freezer on this machine")
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply(local_class(), claim("data"), claim("other-data"),
                  pod("stuck", "echo hi > /data/x; " + STUBBORN, claims={"data": "/data"}, grace=1))
    uid = cluster.wait_running("stuck", timeout=120)["metadata"]["uid"]
    (container,) = containers_of(agent, uid)
    group = FREEZER / f"stowage-test-{uid[:12]}"
    group.mkdir()
    try:
        # Every process of the container (the shell and its sleep) into a frozen group of the test's own.
        init = container["pid"]
        session = os.getsid(init)
        members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _sid(int(p)) == session]
        for pid in members:
            (group / "cgroup.procs").write_text(f"{pid}\n")
        (group / "freezer.state").write_text("FROZEN\n")
        wait_until(lambda: (group / "freezer.state").read_text().strip() == "FROZEN", "the group to freeze")

        cluster.client.delete("pods", "stuck", "default")
        # The agent stays responsive: another pod starts while the stop is stuck.
        cluster.apply(pod("other", claims={"other-data": "/data"}))
        cluster.wait_running("other", timeout=60)

        def refused() -> bool:
            return any(e.get("reason") == "FailedKillPod" for e in cluster.events_for("stuck"))
        wait_until(refused, "a FailedKillPod event on the pod", timeout=120,
                   diagnose=lambda: str(cluster.client.list("pods", "default")[0]))
        stuck = cluster.pod("stuck")  # still there (NotFound fails the test): the container is alive
        assert stuck["metadata"].get("deletionTimestamp")
        assert containers_of(agent, uid), "the container is still alive and must stay known"
        pod_dir = cluster.agent_dir("n1") / "pods" / uid
        assert any(str(m.mount_point).startswith(str(pod_dir)) for m in mounts.mounts_under(pod_dir)), \
            "the volume of a live container must stay set up"

        (group / "freezer.state").write_text("THAWED\n")  # the pending SIGKILL ends it now
        cluster.wait_gone("pods", "stuck", "default", timeout=120)
        assert containers_of(agent, uid) == []
        assert not mounts.mounts_under(pod_dir)
        cluster.wait_running("other")
    finally:
        (group / "freezer.state").write_text("THAWED\n")
        for pid in (group / "cgroup.procs").read_text().split():  # back to the root group, if still alive
            try:
                (FREEZER / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:
                pass
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), "the frozen group to empty", 30)
        group.rmdir()


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_b13_a_retained_pool_volume_is_reclaimed_the_kubernetes_way_with_kubectl(cluster: Cluster) -> None:
    """A local volume whose class says Retain keeps its pool volume when its claim and then the
    PersistentVolume object go, as Kubernetes keeps a Retain volume's disk (B13). The administrator gets it
    back as on Kubernetes, from the manifest saved before the deletion: recreated without its claimRef, a new
    claim binds it with its data; recreated with ``persistentVolumeReclaimPolicy: Delete`` and its claimRef
    (a claim that is gone), it is Released at once and its provisioner deletes it, pool volume included."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    pool = agent.pools["default"]
    retain = {**local_class("keep"), "reclaimPolicy": "Retain"}
    cluster.apply(retain, claim("data", storage_class="keep"),
                  pod("writer", "echo kept > /data/f; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"data": "/data"}))
    cluster.wait_running("writer")
    name = cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"]
    saved = kubectl(cluster, "get", "pv", name, "-o", "json")
    assert saved.returncode == 0, saved.stderr
    manifest = json.loads(saved.stdout)
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        manifest["metadata"].pop(key, None)
    manifest.pop("status", None)
    assert manifest["spec"]["claimRef"]["uid"]

    def release_and_delete_the_object(claim_name: str, pod_name: str) -> None:
        cluster.client.delete("pods", pod_name, "default")
        cluster.wait_gone("pods", pod_name, "default")
        cluster.client.delete("persistentvolumeclaims", claim_name, "default")
        cluster.wait_gone("persistentvolumeclaims", claim_name, "default")
        wait_until(lambda: cluster.client.get("persistentvolumes", name)["status"].get("phase") == "Released",
                   "the Retain volume to be Released")
        deleted = kubectl(cluster, "delete", "pv", name, "--wait", "--timeout=60s")
        assert deleted.returncode == 0, deleted.stderr
        full_pass(agent)
        assert pool.get(name) is not None, "a Retain volume's pool volume went with its object"

    release_and_delete_the_object("data", "writer")

    # Recreated without its claimRef: Available, and a new claim naming it gets the data.
    reused = {**manifest, "spec": {k: v for k, v in manifest["spec"].items() if k != "claimRef"}}
    created = kubectl(cluster, "create", "-f", "-", input=json.dumps(reused).encode())
    assert created.returncode == 0, created.stderr
    again = claim("again", storage_class="keep")
    again["spec"]["volumeName"] = name
    cluster.apply(again, pod("reader", "cat /data/f; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                             claims={"again": "/data"}))
    cluster.wait_running("reader")
    wait_until(lambda: kubectl(cluster, "logs", "reader").stdout == b"kept\n", "the reader to print the kept data")

    release_and_delete_the_object("again", "reader")

    # Recreated with Delete and the claimRef of a claim that is gone: reclaimed, pool volume included.
    reclaim = {**manifest, "spec": {**manifest["spec"], "persistentVolumeReclaimPolicy": "Delete"}}
    created = kubectl(cluster, "create", "-f", "-", input=json.dumps(reclaim).encode())
    assert created.returncode == 0, created.stderr
    cluster.wait_gone("persistentvolumes", name)
    wait_until(lambda: pool.get(name) is None, "the pool volume to be deleted")
    wait_until(lambda: not paths_named(cluster.pool_dir("n1"), name), "the pool volume's files to be gone")
