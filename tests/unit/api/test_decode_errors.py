"""K1/K2: a body Kubernetes' decoder refuses is a 400 naming the Go field and type; value errors stay 422."""
from __future__ import annotations

from typing import Any

import pytest

from storage.api.defaults import apply_defaults
from storage.api.quantity import QUANTITY_ERROR
from storage.api.validation import validate, validate_status
from storage.errors import BadRequest, Invalid


def _sts(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "namespace": "default"},
            "spec": {"serviceName": "s", "replicas": 1, "selector": {"matchLabels": {"app": "s"}},
                     "template": {"metadata": {"labels": {"app": "s"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, **spec}}


def _pvc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec}}


def _pod(**container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox", **container}],
                     "volumes": [{"name": "v", "emptyDir": {}}]}}


def _refused(obj: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as exc:
        validate(apply_defaults(obj))
    assert exc.value.code == 400 and exc.value.reason == "BadRequest"
    return exc.value.message


def test_k1_a_string_replica_count_is_refused_as_kubernetes_decoder_words_it() -> None:
    assert _refused(_sts(replicas="three")) == (
        'StatefulSet in version "v1" cannot be handled as a StatefulSet: json: cannot unmarshal string into '
        'Go struct field StatefulSetSpec.spec.replicas of type int32')


def test_k1_a_string_where_a_list_goes_names_the_list_type() -> None:
    assert _refused(_pvc(accessModes="ReadWriteOnce")) == (
        'PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolumeClaim: json: cannot '
        'unmarshal string into Go struct field PersistentVolumeClaimSpec.spec.accessModes of type []string')


def test_k1_a_number_as_a_label_value_names_the_map_not_the_key() -> None:
    claim = _pvc()
    claim["metadata"]["labels"] = {"tier": 5}
    assert _refused(claim).endswith(
        "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string")


def test_k1_a_malformed_quantity_is_apimachinerys_message() -> None:
    assert _refused(_pvc(resources={"requests": {"storage": "lots"}})) == (
        f'PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolumeClaim: {QUANTITY_ERROR}')


def test_k1_paths_skip_list_indexes_and_name_the_innermost_struct() -> None:
    message = _refused(_sts(template={"metadata": {"labels": {"app": "s"}}, "spec": {
        "containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": "eighty"}]}]}}))
    assert message.endswith("json: cannot unmarshal string into Go struct field ContainerPort"
                            ".spec.template.spec.containers.ports.containerPort of type int32"), message


def test_k1_a_fraction_for_an_integer_and_an_object_where_a_struct_goes() -> None:
    assert _refused(_sts(replicas=1.5)).endswith(
        "json: cannot unmarshal number 1.5 into Go struct field StatefulSetSpec.spec.replicas of type int32")
    assert _refused(_sts(template="web")).endswith(
        "json: cannot unmarshal string into Go struct field StatefulSetSpec.spec.template of type v1.PodTemplateSpec")


def test_k1_an_int_or_string_field_given_a_bool_is_int32s_error() -> None:
    assert _refused(_pod(readinessProbe={"httpGet": {"port": True}})).endswith(
        "json: cannot unmarshal bool into Go value of type int32")


def test_k1_a_status_write_of_the_wrong_type_is_a_decode_error_too() -> None:
    old = validate(apply_defaults(_pvc()))
    with pytest.raises(BadRequest) as exc:
        validate_status({**old, "status": {"phase": "Bound", "accessModes": "ReadWriteOnce"}}, old)
    assert "Go struct field PersistentVolumeClaimStatus.status.accessModes of type []string" in exc.value.message


def test_k1_value_errors_stay_422_field_errors() -> None:
    with pytest.raises(Invalid) as unsupported:
        validate(apply_defaults(_pvc(accessModes=["Bogus"])))
    assert [e.reason for e in unsupported.value.errors] == ["Unsupported value"]
    with pytest.raises(Invalid) as required:
        validate(apply_defaults(_pvc(resources={})))
    assert [e.message() for e in required.value.errors] == ["spec.resources.requests.storage: Required value"]


def test_k1_a_custom_resource_of_the_wrong_type_stays_422() -> None:
    """Kubernetes checks custom resources against their schema after decoding, and answers 422."""
    snapshot = {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "snap", "namespace": "default"},
                "spec": {"source": "claim"}}
    with pytest.raises(Invalid) as exc:
        validate(apply_defaults(snapshot))
    assert any(e.field == "spec.source" for e in exc.value.errors), exc.value.message


@pytest.mark.parametrize("container, why", [
    ({"ports": [{"containerPort": "80"}]}, "ContainerPort.spec.containers.ports.containerPort of type int32"),
    ({"volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": "true"}]},
     "VolumeMount.spec.containers.volumeMounts.readOnly of type bool"),
    ({"stdin": 1}, "Container.spec.containers.stdin of type bool"),
])
def test_k2_numbers_and_booleans_are_not_read_from_other_json_types(container: dict[str, Any], why: str) -> None:
    message = _refused(_pod(**container))
    assert message.endswith(f"Go struct field {why}"), message


def test_k2_int_or_string_fields_take_both_and_plain_numbers_stay_numbers() -> None:
    ok = validate(apply_defaults(_pod(
        ports=[{"containerPort": 80, "name": "http"}],
        readinessProbe={"httpGet": {"port": "http"}}, livenessProbe={"tcpSocket": {"port": 8080}},
        volumeMounts=[{"name": "v", "mountPath": "/v", "readOnly": True}])))
    container = ok["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 80
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["tcpSocket"]["port"] == 8080
    assert container["volumeMounts"][0]["readOnly"] is True
    rolling = validate(apply_defaults(_sts(updateStrategy={"type": "RollingUpdate",
                                                           "rollingUpdate": {"maxUnavailable": "25%"}})))
    assert rolling["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "25%"
