"""networking.k8s.io/v1 Ingress and IngressClass through the API server: stored and listed, validated in
Kubernetes' words, the default class given on create, the status an ingress controller writes checked, and
who may write them (SEMANTICS IN1–IN6)."""
from __future__ import annotations

from typing import Any

import httpx

from apiobjects import causes

INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
CLASSES = "/apis/networking.k8s.io/v1/ingressclasses"


def an_ingress(name: str, **spec: Any) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    rules = [{"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": spec or {"rules": rules}}


def a_class(name: str, *, default: bool = False, **spec: Any) -> dict[str, Any]:
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"controller": "example.com/ingress", **spec}}


def test_in1_an_ingress_is_stored_listed_and_its_status_comes_only_from_the_status_subresource(
        http: httpx.Client) -> None:
    sent = an_ingress("shop")
    sent["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    made = http.post(INGRESSES, json=sent)
    assert made.status_code == 201, made.text
    ingress = made.json()
    assert ingress["spec"] == an_ingress("shop")["spec"]
    assert not (ingress.get("status") or {}).get("loadBalancer", {}).get("ingress")  # a create sets no status
    names = [i["metadata"]["name"] for i in http.get(INGRESSES).json()["items"]]
    assert "shop" in names
    # An ingress controller reports its address through /status.
    ingress["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ports": [{"port": 443, "protocol": "TCP"}]}]}}
    written = http.put(f"{INGRESSES}/shop/status", json=ingress)
    assert written.status_code == 200, written.text
    assert http.get(f"{INGRESSES}/shop").json()["status"] == ingress["status"]
    # IN5: an address that is neither an IP nor a DNS name is refused.
    bad = written.json()
    bad["status"] = {"loadBalancer": {"ingress": [{"ip": "300.1.2.3"}, {"hostname": "192.0.2.9"}]}}
    assert causes(http.put(f"{INGRESSES}/shop/status", json=bad)) == [
        'status.loadBalancer.ingress[0].ip: Invalid value: "300.1.2.3": must be a valid IP address, '
        "(e.g. 10.9.8.7 or 2001:db8::ffff)",
        'status.loadBalancer.ingress[1].hostname: Invalid value: "192.0.2.9": must be a DNS name, not an IP address']
    assert http.delete(f"{INGRESSES}/shop").status_code == 200
    assert http.get(f"{INGRESSES}/shop").status_code == 404


def test_in2_refusals_in_kubernetes_words(http: httpx.Client) -> None:
    assert causes(http.post(INGRESSES, json=an_ingress("empty", ingressClassName=None))) == [
        "spec: Invalid value: null: either `defaultBackend` or `rules` must be specified"]
    port = {"number": 80}
    paths = [
        {"path": "relative", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": port}}},
        {"path": "/a/../b", "pathType": "Exact", "backend": {"service": {"name": "web", "port": port}}},
        {"path": "/", "pathType": "Everything", "backend": {"service": {"name": "web", "port": port}}},
        {"path": "/", "backend": {"service": {"name": "web", "port": port}}},
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}},
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http", "number": 8080}}}},
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "Web_1", "port": {"number": 70000}}}},
        {"path": "/", "pathType": "Prefix", "backend": {}},
    ]
    rules = [{"host": "192.0.2.7", "http": {"paths": paths}}, {"host": "a.*.example.com", "http": {"paths": []}}]
    tls = [{"hosts": ["*.example.com"], "secretName": "Not_A_Name"}]
    got = causes(http.post(INGRESSES, json=an_ingress("bad", rules=rules, tls=tls)))
    p = "spec.rules[0].http.paths"
    assert got[:11] == [
        'spec.rules[0].host: Invalid value: "192.0.2.7": must be a DNS name, not an IP address',
        f'{p}[0].path: Invalid value: "relative": must be an absolute path',
        f"{p}[1].path: Invalid value: \"/a/../b\": must not contain '/../'",
        f'{p}[2].pathType: Unsupported value: "Everything": supported values: "Exact", "ImplementationSpecific", "Prefix"',
        f"{p}[3].pathType: Required value: pathType must be specified",
        f"{p}[4].backend: Required value: port name or number is required",
        f'{p}[5].backend: Invalid value: "": cannot set both port name & port number',
        f'{p}[6].backend.service.name: Invalid value: "Web_1": a lowercase RFC 1123 label must consist of lower case '
        "alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
        "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        f"{p}[6].backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive",
        f'{p}[7].backend: Invalid value: "": resource or service backend is required',
        'spec.rules[1].host: Invalid value: "a.*.example.com": a wildcard DNS-1123 subdomain must start with '
        "'*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or "
        "'.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is "
        "'\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ]
    assert got[11:] == ["spec.rules[1].http.paths: Required value",
                        'spec.tls[0].secretName: Invalid value: "Not_A_Name": a lowercase RFC 1123 subdomain must '
                        "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an "
                        "alphanumeric character (e.g. 'example.com', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
    # Nothing was half-written.
    assert http.get(f"{INGRESSES}/bad").status_code == 404
    resource = {"resource": {"apiGroup": "k8s.example.com", "name": "a/b"}}
    assert causes(http.post(INGRESSES, json=an_ingress("res", defaultBackend=resource))) == [
        "spec.defaultBackend.resource.kind: Required value",
        "spec.defaultBackend.resource.name: Invalid value: \"a/b\": may not contain '/'"]


def test_in3_the_old_class_annotation_must_agree_with_the_class_on_create_only(http: httpx.Client) -> None:
    both = an_ingress("annotated")
    both["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "nginx"}
    both["spec"]["ingressClassName"] = "traefik"
    assert causes(http.post(INGRESSES, json=both)) == [
        'annotations.kubernetes.io/ingress.class: Invalid value: "nginx": must match `ingressClassName` when both '
        "are specified"]
    both["spec"]["ingressClassName"] = "nginx"
    made = http.post(INGRESSES, json=both)
    assert made.status_code == 201, made.text
    # As Kubernetes: an update may set them apart (the check is ValidateIngressCreate's alone).
    changed = made.json()
    changed["spec"]["ingressClassName"] = "traefik"
    assert http.put(f"{INGRESSES}/annotated", json=changed).status_code == 200


def test_in4_ingress_classes_default_their_parameters_scope_and_keep_their_controller(http: httpx.Client) -> None:
    params = {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "lb"}
    made = http.post(CLASSES, json=a_class("scoped", parameters=params))
    assert made.status_code == 201, made.text
    assert made.json()["spec"]["parameters"] == {**params, "scope": "Cluster"}
    changed = made.json()
    changed["spec"]["controller"] = "example.com/other"
    assert causes(http.put(f"{CLASSES}/scoped", json=changed)) == [
        'spec.controller: Invalid value: "example.com/other": field is immutable']
    assert causes(http.post(CLASSES, json=a_class("plain", controller="nginx"))) == [
        'spec.controller: Invalid value: "nginx": must be a domain-prefixed path (such as "acme.io/foo")']
    namespaced = {**params, "scope": "Namespace"}
    assert causes(http.post(CLASSES, json=a_class("ns", parameters=namespaced))) == [
        "spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'"]
    clustered = {**params, "namespace": "default"}
    assert causes(http.post(CLASSES, json=a_class("cl", parameters=clustered))) == [
        "spec.parameters.namespace: Forbidden: `parameters.scope` is set to 'Cluster'"]
    assert http.delete(f"{CLASSES}/scoped").status_code == 200


def test_in6_an_ingress_without_a_class_gets_the_newest_default_class(http: httpx.Client) -> None:
    # No default yet: the field stays unset.
    first = http.post(INGRESSES, json=an_ingress("before-default"))
    assert first.status_code == 201, first.text
    assert "ingressClassName" not in first.json()["spec"]
    for name in ("older-default", "newer-default"):
        assert http.post(CLASSES, json=a_class(name, default=True)).status_code == 201
    try:
        # Equal creation seconds tie to the smaller name, as Kubernetes' plugin sorts them.
        newest = sorted(http.get(CLASSES).json()["items"], key=lambda c: c["metadata"]["creationTimestamp"])
        expected = min(c["metadata"]["name"] for c in newest
                       if c["metadata"]["creationTimestamp"] == newest[-1]["metadata"]["creationTimestamp"]
                       and c["metadata"]["name"].endswith("-default"))
        defaulted = http.post(INGRESSES, json=an_ingress("defaulted"))
        assert defaulted.status_code == 201, defaulted.text
        assert defaulted.json()["spec"]["ingressClassName"] == expected
        # The old annotation names a class too: nothing is added.
        annotated = an_ingress("by-annotation")
        annotated["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "nginx"}
        kept = http.post(INGRESSES, json=annotated)
        assert kept.status_code == 201, kept.text
        assert "ingressClassName" not in kept.json()["spec"]
        # An explicit class is kept.
        own = http.post(INGRESSES, json=an_ingress("own", ingressClassName="mine", defaultBackend={
            "service": {"name": "web", "port": {"name": "http"}}}))
        assert own.status_code == 201 and own.json()["spec"]["ingressClassName"] == "mine", own.text
    finally:
        for name in ("older-default", "newer-default"):
            http.delete(f"{CLASSES}/{name}")


def test_in1_edit_writes_ingresses_view_reads_them_and_neither_writes_ingress_classes(http: httpx.Client) -> None:
    for user, role in (("ing-editor", "edit"), ("ing-viewer", "view")):
        made = http.post("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", json={
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{user}-{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
        assert made.status_code == 201, made.text

    def allowed(user: str, verb: str, resource: str, namespace: str | None = "default",
                subresource: str = "") -> bool:
        attributes = {"verb": verb, "group": "networking.k8s.io", "resource": resource, "subresource": subresource}
        if namespace is not None:
            attributes["namespace"] = namespace
        review = http.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": attributes}})
        assert review.status_code == 201, review.text
        return bool(review.json()["status"]["allowed"])

    assert allowed("ing-editor", "create", "ingresses") and allowed("ing-editor", "delete", "ingresses")
    assert not allowed("ing-editor", "update", "ingresses", subresource="status")  # the controller's
    assert allowed("ing-viewer", "list", "ingresses") and allowed("ing-viewer", "get", "ingresses", subresource="status")
    assert not allowed("ing-viewer", "create", "ingresses")
    for user in ("ing-editor", "ing-viewer"):
        assert not allowed(user, "create", "ingressclasses", namespace=None)
