"""FlexVolume driver calls: command lines, answers, Not supported caching, options and secrets (FV3, FV7, FV9)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from storage.errors import PermanentError
from storage.system import flexvolume as flex
from storage.system.executor import RecordingExecutor

EXE = "/plugins/acme~nfs/nfs"


def driver(responses: dict) -> tuple[flex.FlexDriver, RecordingExecutor]:
    ex = RecordingExecutor(responses=responses)
    return flex.FlexDriver("acme/nfs", Path(EXE), (1, 1, 1), ex), ex


def test_fv9_success_failure_and_garbage_answers() -> None:
    """FV9: Success gives the answer; Failure the driver's message in Kubernetes' words; non-JSON quotes it;
    Success with a failing exit status is a failure."""
    d, ex = driver({(EXE, "attach"): (0, 'log line\n{"status": "Success", "device": "/dev/sdx"}\n', ""),
                    (EXE, "detach"): (1, '{"status": "Failure", "message": "busy"}', ""),
                    (EXE, "mount"): (0, "Segmentation fault", ""),
                    (EXE, "unmount"): (1, '{"status": "Success"}', "")})
    assert d.call("attach", "{}", "n1")["device"] == "/dev/sdx"
    assert ex.calls[-1] == [EXE, "attach", "{}", "n1"]
    with pytest.raises(flex.DriverFailed, match="^detach command failed, status: Failure, reason: busy$"):
        d.call("detach", "v", "n1")
    with pytest.raises(flex.DriverFailed, match="failed to unmarshal output.*Segmentation fault"):
        d.call("mount", "/p", "{}")
    with pytest.raises(flex.DriverFailed, match="exited with status 1 but reported Success"):
        d.call("unmount", "/p")


def test_fv3_not_supported_is_remembered_per_driver_version() -> None:
    """FV3: a command answered Not supported is not run again for this driver version."""
    d, ex = driver({(EXE, "mountdevice"): (1, '{"status": "Not supported"}', "")})
    for _ in range(3):
        with pytest.raises(flex.DriverNotSupported):
            d.call("mountdevice", "/g", "/dev/x", "{}")
    assert len(ex.calls) == 1


def test_fv7_options_and_secrets_are_base64_and_redacted() -> None:
    """FV7: implicit keys, the source's options, kubernetes.io/secret/<key> in base64; secret values are
    redacted from the driver's echoed output."""
    options = json.loads(flex.options_json({"fsType": "xfs", "readOnly": True, "options": {"a": 1}},
                                           volume_name="pv-1", extra={"k": "v"}))
    assert options == {"a": "1", "kubernetes.io/fsType": "xfs", "kubernetes.io/readwrite": "ro",
                       "kubernetes.io/pvOrVolumeName": "pv-1", "k": "v"}
    extra, hidden = flex.secret_options({"password": b"hunter2", "user": "admin"})
    assert extra == {"kubernetes.io/secret/password": base64.b64encode(b"hunter2").decode(),
                     "kubernetes.io/secret/user": base64.b64encode(b"admin").decode()}
    d, _ex = driver({(EXE, "mount"): (0, '{"status": "Failure", "message": "bad password hunter2"}', "")})
    with pytest.raises(flex.DriverFailed) as info:
        d.call("mount", "/p", json.dumps(extra), secrets=hidden)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_fv2_capabilities_defaults_and_driver_names() -> None:
    """FV2: init's missing capabilities take Kubernetes' defaults; FV1 driver names are checked."""
    assert flex.Capabilities.parse({}) == flex.Capabilities(True, True, True, False, True)
    assert flex.Capabilities.parse({"attach": False, "fsGroup": "no"}).attach is False
    assert flex.Capabilities.parse({"fsGroup": "no"}).fs_group is True  # not a boolean: the default
    assert flex.check_driver_name("acme/nfs") == "acme/nfs"
    for bad in ("", "a/b/c", "a/..", "a~b/c", "/x"):
        with pytest.raises(PermanentError):
            flex.check_driver_name(bad)
