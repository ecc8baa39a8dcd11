"""Calling FlexVolume driver executables (Kubernetes' pkg/volume/flexvolume driver-call), shared by the
node plugin and the control-plane attacher, which both find drivers in a plugin directory laid out as
``<vendor>~<driver>/<driver>``.

Each call is ``<driver> <command> <args...>``; the driver prints one JSON object
``{"status": "Success"|"Failure"|"Not supported", "message", "device", "volumeName", "attached",
"capabilities"}``. A ``Not supported`` answer is remembered per driver version, so the default behaviour
is used at once the next time (FV3). The options JSON is an argument, as the protocol defines: secret
values in it are redacted from every log line and error (FV7).
"""
from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from storage.errors import PermanentError, StowageError
from storage.system.executor import CommandTimeout, Executor, default_executor

log = structlog.get_logger(__name__)

# Kubernetes' kubelet default (--volume-plugin-dir); agents and `stowage up` take --volume-plugin-dir.
DEFAULT_PLUGIN_DIR = Path("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")
PLUGIN_DIR_ENV = "STOWAGE_VOLUME_PLUGIN_DIR"
CALL_TIMEOUT = 120.0

STATUS_SUCCESS = "Success"
STATUS_FAILURE = "Failure"
STATUS_NOT_SUPPORTED = "Not supported"

OPT_FS_TYPE = "kubernetes.io/fsType"
OPT_READ_WRITE = "kubernetes.io/readwrite"
OPT_SECRET = "kubernetes.io/secret"
OPT_POD_NAME = "kubernetes.io/pod.name"
OPT_POD_NAMESPACE = "kubernetes.io/pod.namespace"
OPT_POD_UID = "kubernetes.io/pod.uid"
OPT_SERVICE_ACCOUNT = "kubernetes.io/serviceAccount.name"
OPT_PV_OR_VOLUME_NAME = "kubernetes.io/pvOrVolumeName"
OPT_FS_GROUP = "kubernetes.io/mounterArgs.FsGroup"


def plugin_dir_from_env() -> Path:
    return Path(os.environ.get(PLUGIN_DIR_ENV) or DEFAULT_PLUGIN_DIR)


class DriverNotSupported(StowageError):
    """The driver answered ``Not supported``: the caller uses Kubernetes' default for this step."""


class DriverFailed(StowageError):
    """The driver answered ``Failure`` (or nothing usable); the message is the driver's."""


@dataclass(frozen=True)
class Capabilities:
    """The ``init`` answer with Kubernetes' defaults for what the driver leaves out."""

    attach: bool = True
    selinux_relabel: bool = True
    fs_group: bool = True
    supports_metrics: bool = False
    requires_fs_resize: bool = True

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> "Capabilities":
        raw = raw or {}

        def flag(key: str, default: bool) -> bool:
            value = raw.get(key, default)
            return value if isinstance(value, bool) else default

        return cls(flag("attach", True), flag("selinuxRelabel", True), flag("fsGroup", True),
                   flag("supportsMetrics", False), flag("requiresFSResize", True))


@dataclass
class FlexDriver:
    """One driver executable; ``version`` changes when the file is replaced or rewritten."""

    name: str  # vendor/driver
    path: Path
    version: tuple[int, int, int]
    executor: Executor = field(default_factory=default_executor)
    capabilities: Capabilities = field(default_factory=Capabilities)
    _unsupported: set[str] = field(default_factory=set)

    def call(self, command: str, *args: str, secrets: tuple[str, ...] = (), timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """Run one driver command; the parsed ``Success`` answer, else DriverNotSupported / DriverFailed."""
        if command in self._unsupported:
            raise DriverNotSupported(f"{command} is not supported by driver {self.name}")
        argv = [str(self.path), command, *args]
        try:
            proc = self.executor.run(argv, check=False, timeout=timeout, secrets=secrets)
        except CommandTimeout as exc:
            raise DriverFailed(f"driver {self.name}: {command} timed out after {timeout:g}s") from exc
        except StowageError as exc:
            raise DriverFailed(f"driver {self.name}: {command} could not run: {exc}") from exc
        stdout = _redact(proc.stdout or "", secrets)
        try:
            status = json.loads(stdout.strip().splitlines()[-1] if stdout.strip() else "")
            if not isinstance(status, dict):
                raise ValueError("not a JSON object")
        except (ValueError, IndexError):
            detail = (stdout or _redact(proc.stderr or "", secrets)).strip()[:300]
            log.warning("flexvolume.bad_output", driver=self.name, command=command, rc=proc.returncode)
            raise DriverFailed(f"driver {self.name}: {command}: failed to unmarshal output for command: "
                               f"{command}, output: {detail!r}") from None
        state = status.get("status")
        if state == STATUS_NOT_SUPPORTED:
            self._unsupported.add(command)
            log.info("flexvolume.not_supported", driver=self.name, command=command)
            raise DriverNotSupported(f"{command} is not supported by driver {self.name}")
        if state != STATUS_SUCCESS:
            message = str(status.get("message") or "")
            log.warning("flexvolume.call_failed", driver=self.name, command=command, status=state, message=message)
            raise DriverFailed(f"{command} command failed, status: {state}, reason: {message}")
        if proc.returncode != 0:  # "Success" with a failing exit: Kubernetes trusts the exit status
            raise DriverFailed(f"driver {self.name}: {command} exited with status {proc.returncode} "
                               "but reported Success")
        return status


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def driver_dir_name(driver: str) -> str:
    """``vendor/driver`` -> ``vendor~driver`` (the plugin directory's entry)."""
    return driver.replace("/", "~")


def check_driver_name(driver: str, field_name: str = "flexVolume.driver") -> str:
    parts = driver.split("/")
    if not driver or len(parts) > 2 or any(not p or p in (".", "..") or "~" in p for p in parts):
        raise PermanentError(f'{field_name}: Invalid value: "{driver}": must be "<vendor>/<driver>" or "<driver>"')
    return driver


class FlexProber:
    """The drivers installed in a plugin directory, looked up again whenever the directory (or a
    driver's directory or executable) changed since the last lookup: a stat per driver, no thread, no
    polling (FV2). ``init`` runs once per driver version and its capabilities are kept."""

    def __init__(self, plugin_dir: str | os.PathLike[str], executor: Executor | None = None) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.executor = executor or default_executor()
        self._lock = threading.Lock()
        self._drivers: dict[str, FlexDriver] = {}
        self._failed: dict[str, tuple[tuple[int, int, int], str]] = {}  # name -> (version, init error)
        self._stamp: tuple[Any, ...] | None = None

    def _scan_stamp(self) -> tuple[Any, ...]:
        try:
            top = self.plugin_dir.stat()
        except OSError:
            return ()
        entries = []
        try:
            names = sorted(os.listdir(self.plugin_dir))
        except OSError:
            names = []
        for name in names:
            if name.startswith("."):  # Kubernetes ignores hidden entries (e.g. ..data of a ConfigMap)
                continue
            exe = self.plugin_dir / name / name.split("~")[-1]
            try:
                st = exe.stat()
                entries.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                entries.append((name, None))
        return (top.st_mtime_ns, tuple(entries))

    def drivers(self) -> dict[str, FlexDriver]:
        stamp = self._scan_stamp()
        with self._lock:
            if stamp == self._stamp:
                return dict(self._drivers)
            self._stamp = stamp
            found: dict[str, FlexDriver] = {}
            for entry in (stamp[1] if stamp else ()):
                dir_name = entry[0]
                if len(entry) != 4:
                    continue
                name = dir_name.replace("~", "/")
                version = (entry[1], entry[2], entry[3])
                exe = self.plugin_dir / dir_name / dir_name.split("~")[-1]
                if not os.access(exe, os.X_OK):
                    continue
                old = self._drivers.get(name)
                if old is not None and old.version == version:
                    found[name] = old
                    continue
                failed = self._failed.get(name)
                if failed is not None and failed[0] == version:
                    continue
                driver = FlexDriver(name, exe, version, self.executor)
                try:
                    answer = driver.call("init")
                    driver.capabilities = Capabilities.parse(answer.get("capabilities"))
                except StowageError as exc:
                    self._failed[name] = (version, str(exc))
                    log.warning("flexvolume.init_failed", driver=name, error=str(exc))
                    continue
                log.info("flexvolume.driver_found", driver=name, attach=driver.capabilities.attach)
                found[name] = driver
            self._drivers = found
            return dict(found)

    def driver(self, name: str) -> FlexDriver | None:
        return self.drivers().get(name)

    def init_error(self, name: str) -> str | None:
        with self._lock:
            failed = self._failed.get(name)
        return failed[1] if failed else None


def options_json(source: dict[str, Any], *, volume_name: str, read_only: bool = False,
                 extra: dict[str, str] | None = None) -> str:
    """The options argument (Kubernetes' AppendSpec): the source's ``options`` plus the implicit keys."""
    options: dict[str, str] = {str(k): str(v) for k, v in (source.get("options") or {}).items()}
    if source.get("fsType"):
        options[OPT_FS_TYPE] = str(source["fsType"])
    options[OPT_READ_WRITE] = "ro" if (read_only or source.get("readOnly")) else "rw"
    options[OPT_PV_OR_VOLUME_NAME] = volume_name
    options.update(extra or {})
    return json.dumps(options, sort_keys=True)


def secret_options(contents: dict[str, Any] | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """``kubernetes.io/secret/<key>`` -> base64 value for each key of the Secret, and the values to redact."""
    out: dict[str, str] = {}
    hidden: list[str] = []
    for key, value in (contents or {}).items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        encoded = base64.b64encode(raw).decode()
        out[f"{OPT_SECRET}/{key}"] = encoded
        hidden.append(encoded)
        if raw.strip():
            hidden.append(raw.decode(errors="replace"))
    return out, tuple(hidden)
