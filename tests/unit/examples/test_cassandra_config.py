"""examples/cassandra: the start script's rendering, the stand-in, and the manifests.

The start script (bin/run.sh) runs here exactly as in a member, with the
host's /bin/sh and python3, its configuration and data directories pointed
into a temp dir; STOWAGE_RENDER_ONLY=1 stops it after rendering.
"""
from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from storage.agent.runtime.envvars import EnvContext, StaticEnvSources, resolve_env
from storage.api.defaults import apply_defaults
from storage.api.validation import validate
from storage.errors import BadRequest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "cassandra"
BIN = EXAMPLE / "bin"
HOST_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable


def run_script(tmp_path: Path, env: dict[str, str], script: str = "run.sh", *args: str,
               render_only: bool = True) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHON": HOST_PYTHON,
        "CASSANDRA_CONF": str(tmp_path / "conf"),
        "CASSANDRA_DATA_DIR": str(tmp_path / "data"),
        "HOSTNAME": "cassandra-0",
    }
    if render_only:
        base["STOWAGE_RENDER_ONLY"] = "1"
    return subprocess.run(["/bin/sh", str(BIN / script), *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def render(tmp_path: Path, **env: str) -> dict[str, Any]:
    result = run_script(tmp_path, env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load((tmp_path / "conf" / "cassandra.yaml").read_text())


def seeds_of(conf: dict[str, Any]) -> str:
    (provider,) = conf["seed_provider"]
    assert provider["class_name"] == "org.apache.cassandra.locator.SimpleSeedProvider"
    return provider["parameters"][0]["seeds"]


# ---- rendering -----------------------------------------------------------------------------

def test_statefulset_member_environment(tmp_path: Path) -> None:
    conf = render(
        tmp_path, POD_IP="127.1.0.12", CASSANDRA_SEEDS="cassandra-0.cassandra.default.svc.cluster.local",
        CASSANDRA_CLUSTER_NAME="K8Demo", CASSANDRA_DC="DC1-K8Demo", CASSANDRA_RACK="Rack1-K8Demo",
        CASSANDRA_ENDPOINT_SNITCH="GossipingPropertyFileSnitch", MAX_HEAP_SIZE="512M", HEAP_NEWSIZE="100M",
    )
    data = str(tmp_path / "data")
    assert conf["cluster_name"] == "K8Demo"
    assert seeds_of(conf) == "cassandra-0.cassandra.default.svc.cluster.local"
    for key in ("listen_address", "broadcast_address", "rpc_address", "broadcast_rpc_address"):
        assert conf[key] == "127.1.0.12", key
    assert conf["endpoint_snitch"] == "GossipingPropertyFileSnitch"
    assert conf["num_tokens"] == 16 and conf["auto_bootstrap"] is True
    assert conf["data_file_directories"] == [f"{data}/data"]
    assert conf["commitlog_directory"] == f"{data}/commitlog"
    assert conf["saved_caches_directory"] == f"{data}/saved_caches"
    assert conf["hints_directory"] == f"{data}/hints"
    assert (conf["storage_port"], conf["ssl_storage_port"], conf["native_transport_port"]) == (7000, 7001, 9042)
    for sub in ("data", "commitlog", "saved_caches", "hints"):
        assert (tmp_path / "data" / sub).is_dir()
    rackdc = (tmp_path / "conf" / "cassandra-rackdc.properties").read_text().splitlines()
    assert "dc=DC1-K8Demo" in rackdc and "rack=Rack1-K8Demo" in rackdc
    jvm = (tmp_path / "conf" / "jvm.options").read_text().splitlines()
    assert [line for line in jvm if line.startswith("-Xm")] == ["-Xms512M", "-Xmx512M", "-Xmn100M"]


def test_defaults_without_seeds_dc_or_heap(tmp_path: Path) -> None:
    conf = render(tmp_path, POD_IP="127.1.0.3")
    assert conf["cluster_name"] == "Test Cluster"
    assert seeds_of(conf) == "127.1.0.3"  # a lone member seeds itself
    assert conf["endpoint_snitch"] == "SimpleSnitch"
    assert not (tmp_path / "conf" / "cassandra-rackdc.properties").exists()
    jvm = (tmp_path / "conf" / "jvm.options").read_text().splitlines()
    assert "-ea" in jvm
    assert not [line for line in jvm if line.startswith("-Xm")]  # cassandra-env.sh sizes the heap itself


def test_seed_list_num_tokens_tuning_and_overrides(tmp_path: Path) -> None:
    conf = render(
        tmp_path, POD_IP="127.1.0.4", CASSANDRA_SEEDS=" cassandra-0.cassandra , 127.1.0.9 ",
        CASSANDRA_NUM_TOKENS="256", CASSANDRA_AUTO_BOOTSTRAP="false", CASSANDRA_CONCURRENT_READS="8",
        CASSANDRA_CONCURRENT_WRITES="16", CASSANDRA_BROADCAST_ADDRESS="127.1.0.40",
        CASSANDRA_RPC_ADDRESS="0.0.0.0", CASSANDRA_BROADCAST_RPC_ADDRESS="127.1.0.41",
        CASSANDRA_CLUSTER_NAME='Prod: "east" # 1',
    )
    assert seeds_of(conf) == "cassandra-0.cassandra,127.1.0.9"
    assert conf["num_tokens"] == 256 and conf["auto_bootstrap"] is False
    assert conf["concurrent_reads"] == 8 and conf["concurrent_writes"] == 16
    assert conf["listen_address"] == "127.1.0.4" and conf["broadcast_address"] == "127.1.0.40"
    assert conf["rpc_address"] == "0.0.0.0" and conf["broadcast_rpc_address"] == "127.1.0.41"
    assert conf["cluster_name"] == 'Prod: "east" # 1'  # quoting keeps YAML-special characters intact


def test_dc_and_rack_choose_the_gossiping_snitch(tmp_path: Path) -> None:
    conf = render(tmp_path, POD_IP="127.1.0.5", CASSANDRA_DC="eu", CASSANDRA_RACK="r2")
    assert conf["endpoint_snitch"] == "GossipingPropertyFileSnitch"
    props = dict(line.split("=", 1) for line in (tmp_path / "conf" / "cassandra-rackdc.properties").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert props == {"dc": "eu", "rack": "r2"}


def test_address_comes_from_the_hostname_without_pod_ip(tmp_path: Path) -> None:
    conf = render(tmp_path)
    assert conf["listen_address"] == socket.gethostbyname(socket.gethostname())


def test_installed_jvm_server_options_get_the_heap_lines_replaced(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "jvm-server.options").write_text("-ea\n#-Xms4G\n-Xms4G\n-Xmx4G\n-XX:+UseG1GC\n")
    render(tmp_path, POD_IP="127.1.0.6", MAX_HEAP_SIZE="1G", HEAP_NEWSIZE="200M")
    lines = (conf_dir / "jvm-server.options").read_text().splitlines()
    assert "-ea" in lines and "-XX:+UseG1GC" in lines and "#-Xms4G" in lines
    assert [line for line in lines if line.startswith("-Xm")] == ["-Xms1G", "-Xmx1G", "-Xmn200M"]


@pytest.mark.parametrize(("env", "variable"), [
    ({"CASSANDRA_NUM_TOKENS": "many"}, "CASSANDRA_NUM_TOKENS"),
    ({"CASSANDRA_NUM_TOKENS": "0"}, "CASSANDRA_NUM_TOKENS"),
    ({"MAX_HEAP_SIZE": "512M"}, "HEAP_NEWSIZE"),
    ({"HEAP_NEWSIZE": "100M"}, "MAX_HEAP_SIZE"),
    ({"MAX_HEAP_SIZE": "512MB", "HEAP_NEWSIZE": "100M"}, "MAX_HEAP_SIZE"),
    ({"CASSANDRA_DC": "dc1"}, "CASSANDRA_RACK"),
    ({"POD_IP": "not-an-ip"}, "POD_IP"),
    ({"CASSANDRA_SEEDS": "a,,b"}, "CASSANDRA_SEEDS"),
    ({"CASSANDRA_RPC_ADDRESS": "0.0.0.0"}, "CASSANDRA_BROADCAST_RPC_ADDRESS"),
    ({"CASSANDRA_AUTO_BOOTSTRAP": "maybe"}, "CASSANDRA_AUTO_BOOTSTRAP"),
    ({"CASSANDRA_DATA_DIR": "relative/dir"}, "CASSANDRA_DATA_DIR"),
])
def test_bad_input_names_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    result = run_script(tmp_path, {"POD_IP": "127.1.0.7", **env})
    assert result.returncode == 2
    assert f"render_config: {variable}:" in result.stderr
    assert not (tmp_path / "conf" / "cassandra.yaml").exists()


def test_missing_cassandra_home_fails_instead_of_standing_in(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"POD_IP": "127.1.0.8", "CASSANDRA_HOME": str(tmp_path / "nowhere")})
    assert result.returncode == 2 and "CASSANDRA_HOME" in result.stderr


def fake_cassandra_home(tmp_path: Path) -> Path:
    """An installation layout whose bin/cassandra records how it was started (no JVM needed)."""
    home = tmp_path / "cassandra-home"
    (home / "bin").mkdir(parents=True)
    (home / "conf").mkdir()
    (home / "conf" / "logback.xml").write_text("<configuration/>\n")
    (home / "conf" / "cassandra-env.sh").write_text("JMX_PORT=7199\n")
    (home / "conf" / "jvm-server.options").write_text("-Xms8G\n-Xmx8G\n")
    launcher = home / "bin" / "cassandra"
    launcher.write_text('#!/bin/sh\necho "$CASSANDRA_CONF $*" > "$CASSANDRA_CONF/started-with"\n')
    launcher.chmod(0o755)
    return home


def test_with_an_installation_its_conf_is_copied_rendered_over_and_cassandra_execd(tmp_path: Path) -> None:
    home = fake_cassandra_home(tmp_path)
    result = run_script(tmp_path, {"POD_IP": "127.1.0.9", "CASSANDRA_HOME": str(home), "HOSTNAME": "cassandra-2",
                                   "MAX_HEAP_SIZE": "512M", "HEAP_NEWSIZE": "100M"}, render_only=False)
    assert result.returncode == 0, result.stderr
    conf_dir = tmp_path / "conf"
    assert (conf_dir / "logback.xml").exists()  # the installation's files are kept
    assert yaml.safe_load((conf_dir / "cassandra.yaml").read_text())["listen_address"] == "127.1.0.9"
    assert "-Xmx512M" in (conf_dir / "jvm-server.options").read_text().splitlines()
    assert (conf_dir / "stowage-mode").read_text().strip() == "cassandra"
    assert (conf_dir / "stowage-jmx-port").read_text().strip() == "7201"  # 7199 + ordinal 2
    assert "-Dcassandra.jmx.local.port=7201" in (conf_dir / "cassandra-env.sh").read_text()
    started = (conf_dir / "started-with").read_text().split()
    assert started[0] == str(conf_dir) and "-f" in started[1:]


def test_a_cassandra_lib_without_the_jar_fails_instead_of_standing_in_CA2(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    result = run_script(tmp_path, {"POD_IP": "127.1.0.8", "CASSANDRA_LIB": str(tmp_path / "lib")})
    assert result.returncode == 2 and "CASSANDRA_LIB" in result.stderr and "cassandra-all" in result.stderr


def test_the_maven_install_runs_cassandra_daemon_with_java17_options_heap_and_jmx_port_CA2_CA3(
        tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "cassandra-all-5.0.8.jar").write_bytes(b"")
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    # A `java` that records its argv (one per line) instead of starting a JVM.
    (java_home / "bin" / "java").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$CASSANDRA_CONF/java-argv"\n')
    (java_home / "bin" / "java").chmod(0o755)
    result = run_script(tmp_path, {"POD_IP": "127.1.0.9", "CASSANDRA_LIB": str(lib), "JAVA_HOME": str(java_home),
                                   "HOSTNAME": "cassandra-3", "MAX_HEAP_SIZE": "512M", "HEAP_NEWSIZE": "100M",
                                   "CASSANDRA_RING_DELAY_MS": "5000", "CASSANDRA_GOSSIP_SETTLE_POLLS": "0"},
                        render_only=False)
    assert result.returncode == 0, result.stderr
    conf_dir = tmp_path / "conf"
    argv = (conf_dir / "java-argv").read_text().splitlines()
    assert argv[-1] == "org.apache.cassandra.service.CassandraDaemon"
    assert argv[argv.index("-cp") + 1] == f"{conf_dir}:{lib}/*"  # conf first: logback.xml, rackdc
    assert "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED" in argv and "-XX:+UseG1GC" in argv
    assert "-Xmx512M" in argv and "-Xms512M" in argv and "-Xss256k" in argv
    assert not any(a.startswith("#") or not a.strip() for a in argv)  # comments and blank lines dropped
    assert f"-Dcassandra.config=file://{conf_dir}/cassandra.yaml" in argv
    assert "-Dcassandra.jmx.local.port=7202" in argv  # 7199 + ordinal 3
    assert "-Dcassandra.ring_delay_ms=5000" in argv and "-Dcassandra.skip_wait_for_gossip_to_settle=0" in argv
    assert (conf_dir / "stowage-mode").read_text().strip() == "cassandra"
    assert (conf_dir / "stowage-cassandra-lib").read_text().strip() == str(lib)
    assert (conf_dir / "logback.xml").read_text() == (EXAMPLE / "conf" / "logback.xml").read_text()


def test_the_maven_install_is_ready_once_its_cql_port_accepts_connections_CA4(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "stowage-mode").write_text("cassandra\n")
    (conf_dir / "stowage-cassandra-lib").write_text("/nowhere\n")
    addr = f"127.1.{random.randint(1, 254)}.{random.randint(1, 254)}"
    not_yet = run_script(tmp_path, {"POD_IP": addr}, "ready-probe.sh")
    assert not_yet.returncode == 1 and "9042" in not_yet.stdout
    with socket.socket() as listener:
        listener.bind((addr, 9042))
        listener.listen()
        assert run_script(tmp_path, {"POD_IP": addr}, "ready-probe.sh").returncode == 0


# ---- the stand-in --------------------------------------------------------------------------

def test_standin_listens_on_the_member_address_writes_its_marker_and_passes_the_probe(tmp_path: Path) -> None:
    ip = f"127.{random.randint(60, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
    env = {"POD_IP": ip, "STOWAGE_CASSANDRA_STANDIN": "1", "CASSANDRA_SEEDS": "cassandra-0.cassandra"}
    base = {"PATH": "/usr/bin:/bin", "PYTHON": HOST_PYTHON, "CASSANDRA_CONF": str(tmp_path / "conf"),
            "CASSANDRA_DATA_DIR": str(tmp_path / "data"), "HOSTNAME": "cassandra-1", **env}
    probe_before = run_script(tmp_path, env, "ready-probe.sh")
    assert probe_before.returncode == 1  # not started yet: not ready
    proc = subprocess.Popen(["/bin/sh", str(BIN / "run.sh")], env=base, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the stand-in reports ready once it listens; no sleeping
            if '"stand-in ready"' in line:
                break
        else:
            pytest.fail(f"stand-in exited: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
        with socket.create_connection((ip, 9042), timeout=5) as conn:
            assert conn.makefile().readline().startswith("stowage-cassandra-standin")
        with socket.create_connection((ip, 7000), timeout=5):
            pass
        assert run_script(tmp_path, env, "ready-probe.sh").returncode == 0
        marker = json.loads((tmp_path / "data" / "STOWAGE_CASSANDRA_STANDIN.json").read_text())
        assert "not by Cassandra" in marker["note"]
        assert marker["starts"][-1]["address"] == ip and marker["starts"][-1]["seeds"] == "cassandra-0.cassandra"
        assert (tmp_path / "conf" / "stowage-mode").read_text().strip() == "standin"
        assert yaml.safe_load((tmp_path / "conf" / "cassandra.yaml").read_text())["listen_address"] == ip
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0  # SIGTERM is a clean stop


# ---- manifests -----------------------------------------------------------------------------

def manifests() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted(EXAMPLE.glob("*.yaml")) + sorted((EXAMPLE / "variants").glob("*.yaml"))
    return [(p.name, d) for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def test_every_manifest_validates_after_defaults() -> None:
    found = {(name, obj["kind"]) for name, obj in manifests()}
    assert found == {
        ("cassandra-namespace.yaml", "Namespace"),
        ("cassandra-scripts-configmap.yaml", "ConfigMap"), ("cassandra-service.yaml", "Service"),
        ("cassandra-statefulset.yaml", "StatefulSet"), ("local-ssd-storageclass.yaml", "StorageClass"),
        ("cassandra-daemonset.yaml", "DaemonSet"), ("cassandra-controller.yaml", "ReplicationController"),
    }
    for _, obj in manifests():
        validate(apply_defaults(copy.deepcopy(obj)))


def by_kind(kind: str) -> dict[str, Any]:
    (obj,) = [o for _, o in manifests() if o["kind"] == kind]
    return obj


def test_the_namespace_allows_the_added_capability_under_pod_security() -> None:
    """IPC_LOCK is beyond baseline: the example's namespace must say it allows it, or its pods are refused."""
    from storage.api.podsecurity import LevelVersion, check_pod, parse_policy

    template = by_kind("StatefulSet")["spec"]["template"]
    assert [v.reason for v in check_pod(LevelVersion("baseline"), template["metadata"], template["spec"])] == [
        "non-default capabilities"]
    policy, errors = parse_policy(by_kind("Namespace")["metadata"]["labels"], LevelVersion("baseline"))
    assert not errors and check_pod(policy.enforce, template["metadata"], template["spec"]) == []


def test_validation_is_not_vacuous_a_bad_quantity_is_rejected_Q1() -> None:
    sts = copy.deepcopy(by_kind("StatefulSet"))
    sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "1GB"  # Q1
    with pytest.raises(BadRequest, match="quantities must match"):  # Kubernetes' decoder refuses it (K1)
        validate(apply_defaults(sts))


def test_statefulset_follows_the_classic_tutorial_S1() -> None:
    sts, svc, sc = by_kind("StatefulSet"), by_kind("Service"), by_kind("StorageClass")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["selector"] == {"app": "cassandra"}
    assert [p["port"] for p in svc["spec"]["ports"]] == [9042]
    assert sc["provisioner"] == "stowage.io/local" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["reclaimPolicy"] == "Delete" and sc["allowVolumeExpansion"] is True and sc["parameters"]["fsType"] == "ext4"
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["serviceName"] == "cassandra"
    (c,) = spec["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "intra-node": 7000, "tls-intra-node": 7001, "jmx": 7199, "cql": 9042}
    assert c["resources"]["limits"] == c["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert c["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "cassandra-data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["storageClassName"] == sc["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["cassandra-data"] == "/cassandra_data"


def test_statefulset_environment_resolves_for_a_member() -> None:
    sts = by_kind("StatefulSet")
    pod = copy.deepcopy(sts["spec"]["template"])
    pod["metadata"].update(name="cassandra-1", namespace="default")
    env = dict(resolve_env(pod["spec"]["containers"][0],
                           EnvContext(pod=pod, pod_ip="127.1.0.21", host_ip="127.0.0.1", sources=StaticEnvSources({}, {}))))
    assert env["POD_IP"] == "127.1.0.21"
    assert env["CASSANDRA_SEEDS"] == "cassandra-0.cassandra.default.svc.cluster.local"
    assert (env["MAX_HEAP_SIZE"], env["HEAP_NEWSIZE"]) == ("512M", "100M")
    for name in ("CASSANDRA_CLUSTER_NAME", "CASSANDRA_DC", "CASSANDRA_RACK", "CASSANDRA_ENDPOINT_SNITCH"):
        assert env[name]


def test_scripts_reach_members_through_the_configmap_with_the_repository_layout() -> None:
    cm = by_kind("ConfigMap")
    generated = subprocess.run([HOST_PYTHON, "-c", (
        "import importlib.util,sys;"
        f"s=importlib.util.spec_from_file_location('m', {str(BIN / 'make-configmap.py')!r});"
        "m=importlib.util.module_from_spec(s);s.loader.exec_module(m);"
        "import json;print(json.dumps({'text': m.render(), 'items': m.items()}))")],
        capture_output=True, text=True, check=True)
    out = json.loads(generated.stdout)
    assert (EXAMPLE / "cassandra-scripts-configmap.yaml").read_text() == out["text"], \
        "cassandra-scripts-configmap.yaml is stale: run examples/cassandra/bin/make-configmap.py"
    for item in out["items"]:
        assert cm["data"][item["key"]] == (EXAMPLE / item["path"]).read_text()
    for _, obj in manifests():
        if obj["kind"] in ("StatefulSet", "DaemonSet", "ReplicationController"):
            pod_spec = obj["spec"]["template"]["spec"]
            (scripts,) = [v for v in pod_spec["volumes"] if "configMap" in v]
            assert scripts["configMap"]["name"] == cm["metadata"]["name"]
            assert scripts["configMap"]["items"] == out["items"], obj["kind"]
            (c,) = pod_spec["containers"]
            mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}[scripts["name"]]
            assert c["command"] == ["/bin/sh", f"{mount}/bin/run.sh"]
            assert c["readinessProbe"]["exec"]["command"] == ["/bin/sh", f"{mount}/bin/ready-probe.sh"]


def test_variants_match_the_classic_shapes() -> None:
    ds, rc = by_kind("DaemonSet"), by_kind("ReplicationController")
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {"app": "cassandra"}
    assert any("emptyDir" in v for v in ds["spec"]["template"]["spec"]["volumes"])
    assert any("emptyDir" in v for v in rc["spec"]["template"]["spec"]["volumes"])
    (term,) = rc["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app": "cassandra"}


def test_scripts_are_executable_and_posix_sh_parses_them() -> None:
    for script in ("run.sh", "ready-probe.sh", "pre-stop.sh"):
        assert os.access(BIN / script, os.X_OK)
        assert subprocess.run(["/bin/sh", "-n", str(BIN / script)]).returncode == 0


def pre_stop(tmp_path: Path, statuses: list[str], mode: str = "cassandra",
             wait: str = "20") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """bin/pre-stop.sh of the Maven install beside a nodetool that answers ``status`` with the
    given outputs in turn (the last one again after that; "FAIL" exits 1) and logs every call."""
    bin_dir, conf = tmp_path / "bin", tmp_path / "conf"
    bin_dir.mkdir()
    conf.mkdir()
    shutil.copy(BIN / "pre-stop.sh", bin_dir / "pre-stop.sh")
    (conf / "stowage-mode").write_text(mode + "\n")
    (conf / "stowage-cassandra-lib").write_text("/nowhere\n")
    for i, out in enumerate(statuses):
        (tmp_path / f"status-{i}").write_text(out)
    calls = tmp_path / "calls"
    (bin_dir / "nodetool").write_text(f"""#!/bin/sh
echo "$*" >> {calls}
[ "$1" = status ] || exit 0
n=$(grep -c '^status' {calls})
f={tmp_path}/status-$((n - 1))
[ -f "$f" ] || f={tmp_path}/status-{len(statuses) - 1}
[ "$(cat "$f")" = FAIL ] && exit 1
cat "$f"
""")
    (bin_dir / "nodetool").chmod(0o755)
    result = subprocess.run(["/bin/sh", str(bin_dir / "pre-stop.sh")], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "CASSANDRA_CONF": str(conf), "PRESTOP_RING_WAIT": wait})
    return result, calls.read_text().split("\n")[:-1] if calls.exists() else []


def ring(*states: str) -> str:
    rows = [f"{s}  127.1.0.{i + 2}  1.2 MiB  16  100.0%  {i:08x}-0000-4000-8000-000000000000  Rack1" for i, s in
            enumerate(states)]
    return "Datacenter: DC1\n===============\nStatus=Up/Down\n|/ State=Normal/Leaving/Joining/Moving\n" \
           "--  Address  Load  Tokens  Owns (effective)  Host ID  Rack\n" + "\n".join(rows) + "\n"


def test_pre_stop_drains_only_once_the_member_sees_the_whole_ring_up_normal_CA4_CA5(tmp_path: Path) -> None:
    # The member restarted last is still Down in this member's view at the first look.
    result, calls = pre_stop(tmp_path, [ring("UN", "DN", "UN"), ring("UN", "UN", "UN")])
    assert result.returncode == 0, result.stderr
    assert calls == ["status", "status", "drain"]
    assert "waiting for 1 of 3 members to be Up/Normal" in result.stdout


def test_pre_stop_waits_for_a_joining_member_too_CA4(tmp_path: Path) -> None:
    result, calls = pre_stop(tmp_path, [ring("UN", "UJ", "UN", "UN"), ring("UN", "UN", "UN", "UN")])
    assert result.returncode == 0 and calls == ["status", "status", "drain"], (result.stdout, calls)


def test_pre_stop_drains_anyway_when_a_member_stays_down_past_its_bound_CA4(tmp_path: Path) -> None:
    result, calls = pre_stop(tmp_path, [ring("UN", "DN", "UN")], wait="1")
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "drain" and set(calls[:-1]) == {"status"} and len(calls) >= 2
    assert "1 of 3 members still not Up/Normal after 1s: draining anyway" in result.stdout


def test_pre_stop_of_a_member_whose_jmx_does_not_answer_tries_the_drain_at_once(tmp_path: Path) -> None:
    result, calls = pre_stop(tmp_path, ["FAIL"])
    assert result.returncode == 0 and calls == ["status", "drain"], (result.stdout, calls)


def test_pre_stop_of_the_stand_in_runs_no_nodetool(tmp_path: Path) -> None:
    result, calls = pre_stop(tmp_path, [ring("UN")], mode="standin")
    assert result.returncode == 0 and calls == []


def test_the_statefulset_runs_the_pre_stop_script_from_the_configmap() -> None:
    (c,) = by_kind("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sh", "/opt/cassandra-example/bin/pre-stop.sh"]
