"""The command line's one doorway to the API: builds the client from the kubeconfig.

Every command talks to the server through ``Session`` so the command code
stays independent of how the client spells its calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import click

from storage.api.registry import ResourceInfo, by_plural
from storage.errors import from_status


@dataclass
class Options:
    """The global flags, after the environment and defaults are applied."""

    kubeconfig: str | None = None
    namespace: str = "default"
    namespace_explicit: bool = False
    all_namespaces: bool = False


@dataclass
class Session:
    options: Options
    _client: Any = field(default=None, repr=False)
    server: str = ""

    @property
    def client(self) -> Any:
        if self._client is None:
            from storage.cli.errors import CommandError
            from storage.client import Client
            from storage.client.kubeconfig import load_access

            try:
                access = load_access(self.options.kubeconfig)
            except (FileNotFoundError, ValueError) as exc:
                raise CommandError(str(exc)) from None
            self.server = access.server
            # kubectl's way: admission warnings (e.g. "would violate PodSecurity ...") go to stderr.
            self._client = Client.from_access(access, on_warning=lambda text: click.echo(f"Warning: {text}", err=True))
        return self._client

    def namespace_for(self, info: ResourceInfo) -> str:
        return self.options.namespace if info.namespaced else ""

    def get(self, info: ResourceInfo, namespace: str, name: str) -> dict[str, Any]:
        obj = self.client.get(info.plural, name, namespace=namespace)
        obj.setdefault("kind", info.kind)
        obj.setdefault("apiVersion", info.api_version)
        return obj

    def list(
        self,
        info: ResourceInfo,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Items (with kind and apiVersion filled in) and the list's resourceVersion."""
        items, version = self.client.list(
            info.plural, namespace=namespace, label_selector=label_selector, field_selector=field_selector
        )
        for item in items:
            item.setdefault("kind", info.kind)
            item.setdefault("apiVersion", info.api_version)
        return list(items), str(version or "")

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        info = by_plural(plural)
        assert info is not None, plural
        return self.list(info, namespace if info.namespaced else None)[0]

    def create(self, info: ResourceInfo, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        return self.client.create(_placed(obj, info, namespace))

    def update(self, info: ResourceInfo, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        return self.client.update(_placed(obj, info, namespace))

    def patch(
        self, info: ResourceInfo, namespace: str, name: str, body: Any, patch_type: str
    ) -> dict[str, Any]:
        return self.client.patch(info.plural, name, body, namespace=namespace, patch_type=patch_type)

    def delete(self, info: ResourceInfo, namespace: str, name: str, grace_period: int | None = None) -> dict[str, Any]:
        return self.client.delete(info.plural, name, namespace=namespace, grace_period_seconds=grace_period)

    def watch(
        self,
        info: ResourceInfo,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for event in self.client.watch(
            info.plural,
            namespace=namespace,
            resource_version=resource_version or None,
            label_selector=label_selector,
            field_selector=field_selector,
        ):
            kind, obj = _event_parts(event)
            if kind == "BOOKMARK":
                continue
            obj.setdefault("kind", info.kind)
            obj.setdefault("apiVersion", info.api_version)
            yield kind, obj

    def _get_json(self, path: str) -> Any:
        """A discovery document; these have no verb on the client, being outside any resource."""
        # The client's own connection: its TLS trust and credentials apply here too.
        response = self.client.http.get(path)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            if not isinstance(body, dict) or body.get("kind") != "Status":
                body = {"message": f"GET {path}: HTTP {response.status_code}", "code": response.status_code}
            raise from_status(body, response.status_code)
        return response.json()

    def server_version(self) -> dict[str, Any]:
        return self._get_json("/version")

    def discovery(self) -> list[tuple[str, dict[str, Any]]]:
        """``(groupVersion, APIResource)`` for every resource the server lists in discovery."""
        out: list[tuple[str, dict[str, Any]]] = []
        for version in self._get_json("/api").get("versions") or []:
            for res in self._get_json(f"/api/{version}").get("resources") or []:
                out.append((version, res))
        for group in self._get_json("/apis").get("groups") or []:
            for gv in group.get("versions") or []:
                group_version = gv.get("groupVersion")
                if not group_version:
                    continue
                for res in self._get_json(f"/apis/{group_version}").get("resources") or []:
                    out.append((group_version, res))
        return out


def _placed(obj: dict[str, Any], info: ResourceInfo, namespace: str) -> dict[str, Any]:
    """The object with kind and namespace set, which the client routes by."""
    out = dict(obj)
    out.setdefault("kind", info.kind)
    meta = dict(out.get("metadata") or {})
    if info.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    out["metadata"] = meta
    return out


def _event_parts(event: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(event, dict):
        return str(event.get("type")), dict(event.get("object") or {})
    if isinstance(event, tuple):
        return str(event[0]), dict(event[1])
    return str(event.type), dict(event.object)
