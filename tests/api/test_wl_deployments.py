"""Deployments over the API: Kubernetes' defaults, validation of the strategy, and legacy apiVersions."""
from __future__ import annotations

from typing import Any

import pytest

from storage.client import Client
from storage.errors import Invalid


def deployment(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    }
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": body}


def test_defaults_are_kubernetes_ones(client: Client) -> None:
    made = client.create(deployment())
    spec = made["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["spec"]["restartPolicy"] == "Always"


@pytest.mark.parametrize("spec,field,detail", [
    ({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}},
     "spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0"),
    ({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "150%"}}},
     "spec.strategy.rollingUpdate.maxSurge", "must not be greater than 100%"),
    ({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}},
     "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"),
    ({"strategy": {"type": "BlueGreen"}}, "spec.strategy.type", 'supported values: "Recreate", "RollingUpdate"'),
    ({"selector": {"matchLabels": {"app": "other"}}}, "spec.template.metadata.labels",
     "`selector` does not match template `labels`"),
    ({"replicas": -1}, "spec.replicas", "must be greater than or equal to 0"),
    ({"minReadySeconds": 30, "progressDeadlineSeconds": 10}, "spec.progressDeadlineSeconds",
     "must be greater than minReadySeconds"),
])
def test_invalid_deployments_are_422_naming_the_field(client: Client, spec: dict[str, Any], field: str,
                                                       detail: str) -> None:
    with pytest.raises(Invalid) as err:
        client.create(deployment(**spec))
    assert field in err.value.message and detail in err.value.message
    assert client.list("deployments", "default")[0] == []


def test_selector_is_immutable(client: Client) -> None:
    made = client.create(deployment())
    made["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    made["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    with pytest.raises(Invalid) as err:
        client.update(made)
    assert "spec.selector" in err.value.message and "immutable" in err.value.message


def test_legacy_extensions_deployment_gets_its_selector_from_the_template(client: Client) -> None:
    legacy = deployment()
    legacy["apiVersion"] = "extensions/v1beta1"
    del legacy["spec"]["selector"]
    made = client.create(legacy)
    assert made["apiVersion"] == "apps/v1"
    assert made["spec"]["selector"] == {"matchLabels": {"app": "web"}}
