"""networking.k8s.io/v1 NetworkPolicies (SEMANTICS NP1–NP3): the Kubernetes documentation's example stored
with Kubernetes' defaults, ValidateNetworkPolicySpec's refusals in its words, and kubectl's get and
describe with each kubectl the README promises."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from apiobjects import causes
from storage.apiserver.server import RunningServer
from support import KUBECTL_VERSIONS, run_kubectl

POLICIES = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"

# The example of the Kubernetes documentation's "Network Policies" page.
DOCS_EXAMPLE = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"""


def a_policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": {"podSelector": {}, **spec}}


def test_np1_np2_the_documentation_example_and_kubernetes_defaults(http: httpx.Client) -> None:
    example = yaml.safe_load(DOCS_EXAMPLE)
    made = http.post(POLICIES, json=example)
    assert made.status_code == 201, made.text
    assert made.json()["spec"] == example["spec"]
    # No policyTypes: Ingress, and Egress too when egress rules exist; a port's protocol is TCP.
    egress = a_policy("egress-only", egress=[{"ports": [{"port": 53}]}])
    spec = http.post(POLICIES, json=egress).json()["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"][0]["ports"] == [{"port": 53, "protocol": "TCP"}]
    deny_all = http.post(POLICIES, json=a_policy("deny-all")).json()["spec"]
    assert deny_all == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize("spec, wanted", [
    ({"ingress": [{"from": [{}]}]}, ["spec.ingress[0].from[0]: Required value: must specify a peer"]),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     ["spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"]),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8", "except": ["192.168.0.0/24", "10.0.0.0/8"]}}]}]},
     # As Kubernetes: the loose parse of the cidr still checks the exceptions.
     ['spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.1/8": must not have bits set beyond the prefix length',
      'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "192.168.0.0/24": must be a strict subset of `cidr`',
      'spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`']),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/24", "10.0.0.0/8"]}}]}]},
     ['spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "192.168.0.0/24": must be a strict subset of `cidr`',
      'spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`']),
    ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0/8"}}]}]},
     ['spec.egress[0].to[0].ipBlock.cidr: Invalid value: "10.0.0/8": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
      '2001:db8::/64)']),
    ({"ingress": [{"ports": [{"port": 80, "endPort": 79}, {"port": "http", "endPort": 90},
                             {"endPort": 90}, {"port": 70000, "protocol": "ICMP"}]}]},
     ["spec.ingress[0].ports[0].endPort: Invalid value: 79: must be greater than or equal to `port`",
      "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
      "spec.ingress[0].ports[2].endPort: Invalid value: 90: may not be specified when `port` is not specified",
      'spec.ingress[0].ports[3].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"',
      "spec.ingress[0].ports[3].port: Invalid value: 70000: must be between 1 and 65535, inclusive"]),
    ({"policyTypes": ["Ingress", "Sideways"]},
     ['spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress"']),
])
def test_np1_invalid_policies_are_refused_in_kubernetes_words(http: httpx.Client, spec: dict[str, Any],
                                                              wanted: list[str]) -> None:
    found = causes(http.post(POLICIES, json=a_policy("bad", **spec)))
    assert sorted(found) == sorted(wanted), found
    assert http.get(f"{POLICIES}/bad").status_code == 404


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_np1_kubectl_applies_lists_and_describes_policies(module_server: RunningServer, tmp_path: Path,
                                                          version: str) -> None:
    namespace = f"np-{version.replace('.', '')}"

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = run_kubectl(version, module_server.kubeconfig, tmp_path / "cache", *args, stdin=stdin)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    kubectl("create", "namespace", namespace)
    applied = kubectl("-n", namespace, "apply", "-f", "-", stdin=DOCS_EXAMPLE.replace("  namespace: default\n", ""))
    assert applied.strip() == "networkpolicy.networking.k8s.io/test-network-policy created"
    lines = kubectl("-n", namespace, "get", "netpol").strip().splitlines()
    assert lines[0].split() == ["NAME", "POD-SELECTOR", "AGE"] and lines[1].split()[:2] == ["test-network-policy",
                                                                                            "role=db"]
    described = kubectl("-n", namespace, "describe", "networkpolicy", "test-network-policy")
    for text in ("PodSelector:     role=db", "Allowing ingress traffic:", "To Port: 6379/TCP",
                 "IPBlock:", "CIDR: 172.17.0.0/16", "Except: 172.17.1.0/24", "Allowing egress traffic:",
                 "Policy Types: Ingress, Egress"):
        assert text in described, described
    assert kubectl("-n", namespace, "diff", "-f", "-", stdin=DOCS_EXAMPLE.replace("  namespace: default\n", "")) == ""
