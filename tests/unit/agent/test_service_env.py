"""Service environment variables as the agent hands pods to the runtime (issue 5, item 3)."""
from __future__ import annotations

from storage.agent.resolve import pod_with_service_env


def _service(name: str, cluster_ip: str | None, ports: list[dict]) -> dict:
    spec: dict = {"ports": ports, "selector": {"app": name}}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _pod(**spec_extra: object) -> dict:
    return {"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "DB_SERVICE_PORT", "value": "mine"}]}],
                     **spec_extra}}


def test_services_become_kubernetes_style_variables_before_the_containers_own_env() -> None:
    db = _service("db", None, [{"name": "sql", "port": 5432, "protocol": "TCP"}])
    endpoints = {"db": {"subsets": [{"addresses": [{"ip": "127.1.0.7"}], "ports": [{"name": "sql", "port": 5432}]}]}}
    env = pod_with_service_env(_pod(), [db], endpoints)["spec"]["containers"][0]["env"]
    values = {e["name"]: e["value"] for e in env}
    assert values["DB_SERVICE_HOST"] == "127.1.0.7"
    assert values["DB_PORT"] == "tcp://127.1.0.7:5432"
    assert values["DB_PORT_5432_TCP_ADDR"] == "127.1.0.7"
    assert values["DB_SERVICE_PORT_SQL"] == "5432"
    # The container's own definition wins and keeps its place after the injected ones.
    assert [e for e in env if e["name"] == "DB_SERVICE_PORT"] == [{"name": "DB_SERVICE_PORT", "value": "mine"}]
    assert env[-1]["name"] == "DB_SERVICE_PORT"


def test_enable_service_links_false_injects_nothing_and_the_input_is_not_modified() -> None:
    db = _service("db", "10.0.0.9", [{"port": 80}])
    pod = _pod(enableServiceLinks=False)
    assert pod_with_service_env(pod, [db], {}) is pod
    plain = _pod()
    out = pod_with_service_env(plain, [db], {})
    assert {e["name"] for e in out["spec"]["containers"][0]["env"]} >= {"DB_SERVICE_HOST", "DB_SERVICE_PORT"}
    assert plain["spec"]["containers"][0]["env"] == [{"name": "DB_SERVICE_PORT", "value": "mine"}]
