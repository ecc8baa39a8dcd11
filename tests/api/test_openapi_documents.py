"""/openapi/v2 and /openapi/v3: valid documents, every served kind, what kubectl looks for in them."""
from __future__ import annotations

import json

import httpx
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator

from storage.api.openapi import definition_name
from storage.api.k8s_protobuf import raw_fields as decode_fields
from storage.api.models import MODELS
from storage.api.registry import RESOURCES, groups

PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def get(api_server, path: str, **headers: str) -> httpx.Response:
    return httpx.get(api_server.url + path, headers={"Authorization": f"Bearer {api_server.token}", **headers},
                     timeout=30, follow_redirects=False, verify=api_server.verify())


def _gvks(doc_defs: dict) -> dict[tuple[str, str, str], str]:
    out = {}
    for name, schema in doc_defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            out[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return out


def test_v2_is_valid_swagger_and_has_every_kind(api_server) -> None:
    resp = get(api_server, "/openapi/v2", Accept="application/json")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    validate(doc, cls=OpenAPIV2SpecValidator)
    gvks = _gvks(doc["definitions"])
    for info in RESOURCES:
        assert gvks[(info.group, info.version, info.kind)] == definition_name(MODELS[info.kind])
        assert (info.group, info.version, info.kind + "List") in gvks
    pv = doc["definitions"]["io.k8s.api.core.v1.PersistentVolume"]
    assert pv["description"] and pv["properties"]["spec"]["$ref"] == "#/definitions/io.k8s.api.core.v1.PersistentVolumeSpec"
    spec = doc["definitions"]["io.k8s.api.core.v1.PersistentVolumeSpec"]["properties"]
    assert spec["persistentVolumeReclaimPolicy"]["enum"] == ["Delete", "Recycle", "Retain"]
    assert spec["accessModes"]["items"]["enum"] == ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
    assert spec["capacity"]["additionalProperties"]["$ref"] == "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"
    assert doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    containers = doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-strategy"] == "merge" and containers["x-kubernetes-patch-merge-key"] == "name"
    assert doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["required"] == ["containers"]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in doc["definitions"]
    assert "io.k8s.api.storage.v1.StorageClass" in doc["definitions"]
    assert "io.k8s.api.apps.v1.StatefulSet" in doc["definitions"]


def test_v2_in_protobuf_as_client_go_asks_for_it(api_server) -> None:
    # client-go asks for the v2 document in protobuf only (kubectl before 1.27 validates and explains with it).
    resp = get(api_server, "/openapi/v2", Accept=PROTOBUF_V2)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    document = decode_fields(resp.content)  # openapi.v2.Document
    assert document[1] == [b"2.0"]
    definitions = decode_fields(document[9][0])[1]  # Definitions.additional_properties: NamedSchema
    named = {decode_fields(d)[1][0].decode(): decode_fields(decode_fields(d)[2][0]) for d in definitions}
    pv = named["io.k8s.api.core.v1.PersistentVolume"]  # Schema
    extensions = {decode_fields(e)[1][0].decode(): decode_fields(decode_fields(e)[2][0])[2][0] for e in pv[31]}
    assert json.loads(extensions["x-kubernetes-group-version-kind"]) == [{"group": "", "kind": "PersistentVolume",
                                                                         "version": "v1"}]
    properties = {decode_fields(p)[1][0].decode() for p in decode_fields(pv[25][0])[1]}
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= properties
    assert decode_fields(pv[22][0])[1] == [b"object"]  # Schema.type
    assert len(named) == len(get(api_server, "/openapi/v2").json()["definitions"])
    paths = decode_fields(document[8][0])[2]
    assert len(paths) == len(get(api_server, "/openapi/v2").json()["paths"])
    # JSON when JSON comes first; 406 when nothing offered can be produced.
    assert get(api_server, "/openapi/v2", Accept=f"application/json, {PROTOBUF_V2}").json()["swagger"] == "2.0"
    assert get(api_server, "/openapi/v2", Accept="application/vnd.kubernetes.protobuf").status_code == 406
    assert get(api_server, "/openapi/v3", Accept="application/vnd.kubernetes.protobuf").status_code == 406


def test_v3_index_and_group_documents(api_server) -> None:
    index = get(api_server, "/openapi/v3").json()
    expected = {f"apis/{gv}" if "/" in gv else f"api/{gv}" for gv in groups()}
    assert set(index["paths"]) == expected
    for key, entry in index["paths"].items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{key}?hash=")
        resp = get(api_server, url)
        assert resp.status_code == 200 and resp.headers["cache-control"] == "public, immutable"
        doc = resp.json()
        validate(doc, cls=OpenAPIV30SpecValidator)
        gv = key.split("/", 1)[1]
        gvks = _gvks(doc["components"]["schemas"])
        for info in groups()[gv]:
            assert (info.group, info.version, info.kind) in gvks
            # kubectl leaves validation to the server only when the kind's PATCH lists fieldValidation.
            patches = [item["patch"] for item in doc["paths"].values()
                       if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"]["kind"] == info.kind]
            assert patches and all(any(p["name"] == "fieldValidation" for p in op["parameters"]) for op in patches)
        schemas = doc["components"]["schemas"]
        if "io.k8s.apimachinery.pkg.api.resource.Quantity" in schemas:  # a oneOf, as Kubernetes' documents
            quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
            assert "type" not in quantity and quantity["oneOf"] == [{"type": "string"}, {"type": "number"}]
        # Only the schemas this group reaches (apps/v1 reaches core's PersistentVolumeClaim, as Kubernetes').
        assert not any(g == "storage.k8s.io" for (g, _, _) in gvks) or gv == "storage.k8s.io/v1"


def test_v3_etag_and_outdated_hash(api_server) -> None:
    url = get(api_server, "/openapi/v3").json()["paths"]["api/v1"]["serverRelativeURL"]
    first = get(api_server, url)
    etag = first.headers["etag"]
    again = get(api_server, url, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    stale = get(api_server, "/openapi/v3/api/v1?hash=0123")
    assert stale.status_code == 301 and stale.headers["location"] == url
    assert get(api_server, "/openapi/v3/apis/nothing/v1").status_code == 404
    assert get(api_server, "/openapi/v3/api/apps/v1").status_code == 404


@pytest.mark.parametrize("path", ["/openapi/v2", "/openapi/v3", "/openapi/v3/api/v1"])
def test_openapi_needs_a_token(api_server, path: str) -> None:
    assert httpx.get(api_server.url + path, timeout=30, verify=api_server.verify()).status_code == 401
