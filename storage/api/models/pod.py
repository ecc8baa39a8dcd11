"""Pod spec pieces: containers, probes, security, scheduling constraints."""
from __future__ import annotations

from typing import Any

from storage.api.modelbase import WireModel
from storage.api.models.meta import Condition, LocalObjectReference, ObjectMeta, alias
from storage.api.models.volumes import ObjectFieldSelector, ResourceFieldSelector, Volume
from storage.api.quantity import Quantity
from storage.api.selectors import LabelSelector


class ConfigMapKeySelector(WireModel):
    name: str | None = None
    key: str | None = None
    optional: bool | None = None


class SecretKeySelector(WireModel):
    name: str | None = None
    key: str | None = None
    optional: bool | None = None


class EnvVarSource(WireModel):
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None


class EnvVar(WireModel):
    name: str | None = None
    value: str | None = None
    value_from: EnvVarSource | None = None


class ConfigMapEnvSource(WireModel):
    name: str | None = None
    optional: bool | None = None


class SecretEnvSource(WireModel):
    name: str | None = None
    optional: bool | None = None


class EnvFromSource(WireModel):
    prefix: str | None = None
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: SecretEnvSource | None = None


class ContainerPort(WireModel):
    name: str | None = None
    host_port: int | None = None
    container_port: int | None = None
    protocol: str | None = None
    host_ip: str | None = alias("hostIP")


class VolumeMount(WireModel):
    name: str | None = None
    read_only: bool | None = None
    recursive_read_only: str | None = None
    mount_path: str | None = None
    sub_path: str | None = None
    sub_path_expr: str | None = None
    mount_propagation: str | None = None


class VolumeDevice(WireModel):
    name: str | None = None
    device_path: str | None = None


class ResourceRequirements(WireModel):
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None
    claims: list[dict[str, Any]] | None = None


class Capabilities(WireModel):
    add: list[str] | None = None
    drop: list[str] | None = None


class SecurityContext(WireModel):
    capabilities: Capabilities | None = None
    privileged: bool | None = None
    se_linux_options: dict[str, Any] | None = alias("seLinuxOptions")
    windows_options: dict[str, Any] | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    read_only_root_filesystem: bool | None = None
    allow_privilege_escalation: bool | None = None
    proc_mount: str | None = None
    seccomp_profile: dict[str, Any] | None = None
    app_armor_profile: dict[str, Any] | None = None


class Sysctl(WireModel):
    name: str | None = None
    value: str | None = None


class PodSecurityContext(WireModel):
    se_linux_options: dict[str, Any] | None = alias("seLinuxOptions")
    windows_options: dict[str, Any] | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    supplemental_groups: list[int] | None = None
    supplemental_groups_policy: str | None = None
    fs_group: int | None = None
    fs_group_change_policy: str | None = None
    sysctls: list[Sysctl] | None = None
    seccomp_profile: dict[str, Any] | None = None
    app_armor_profile: dict[str, Any] | None = None


class ExecAction(WireModel):
    command: list[str] | None = None


class HTTPHeader(WireModel):
    name: str | None = None
    value: str | None = None


class HTTPGetAction(WireModel):
    path: str | None = None
    port: int | str | None = None
    host: str | None = None
    scheme: str | None = None
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(WireModel):
    port: int | str | None = None
    host: str | None = None


class GRPCAction(WireModel):
    port: int | None = None
    service: str | None = None


class SleepAction(WireModel):
    seconds: int | None = None


class Probe(WireModel):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int | None = None
    timeout_seconds: int | None = None
    period_seconds: int | None = None
    success_threshold: int | None = None
    failure_threshold: int | None = None
    termination_grace_period_seconds: int | None = None


class LifecycleHandler(WireModel):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    sleep: SleepAction | None = None


class Lifecycle(WireModel):
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None
    stop_signal: str | None = None


class Container(WireModel):
    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] | None = None
    env_from: list[EnvFromSource] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    resize_policy: list[dict[str, Any]] | None = None
    restart_policy: str | None = None
    volume_mounts: list[VolumeMount] | None = None
    volume_devices: list[VolumeDevice] | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Lifecycle | None = None
    termination_message_path: str | None = None
    termination_message_policy: str | None = None
    image_pull_policy: str | None = None
    security_context: SecurityContext | None = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None


class EphemeralContainer(Container):
    """A container added to a running pod through ``pods/ephemeralcontainers`` (``kubectl debug``)."""

    target_container_name: str | None = None


class NodeSelectorRequirement(WireModel):
    key: str | None = None
    operator: str | None = None
    values: list[str] | None = None


class NodeSelectorTerm(WireModel):
    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None


class NodeSelector(WireModel):
    node_selector_terms: list[NodeSelectorTerm] | None = None


class PreferredSchedulingTerm(WireModel):
    weight: int | None = None
    preference: NodeSelectorTerm | None = None


class NodeAffinity(WireModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = None


class PodAffinityTerm(WireModel):
    label_selector: LabelSelector | None = None
    namespaces: list[str] | None = None
    topology_key: str | None = None
    namespace_selector: LabelSelector | None = None
    match_label_keys: list[str] | None = None
    mismatch_label_keys: list[str] | None = None


class WeightedPodAffinityTerm(WireModel):
    weight: int | None = None
    pod_affinity_term: PodAffinityTerm | None = None


class PodAffinity(WireModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = None


class PodAntiAffinity(WireModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = None


class Affinity(WireModel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAntiAffinity | None = None


class Toleration(WireModel):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class HostAlias(WireModel):
    ip: str | None = None
    hostnames: list[str] | None = None


class PodDNSConfig(WireModel):
    nameservers: list[str] | None = None
    searches: list[str] | None = None
    options: list[dict[str, Any]] | None = None


class PodSpec(WireModel):
    volumes: list[Volume] | None = None
    init_containers: list[Container] | None = None
    containers: list[Container] | None = None
    ephemeral_containers: list[EphemeralContainer] | None = None
    restart_policy: str | None = None
    termination_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    dns_policy: str | None = None
    node_selector: dict[str, str] | None = None
    service_account_name: str | None = None
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    node_name: str | None = None
    host_network: bool | None = None
    host_pid: bool | None = alias("hostPID")
    host_ipc: bool | None = alias("hostIPC")
    host_users: bool | None = None
    share_process_namespace: bool | None = None
    security_context: PodSecurityContext | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    hostname: str | None = None
    subdomain: str | None = None
    set_hostname_as_fqdn: bool | None = alias("setHostnameAsFQDN")
    affinity: Affinity | None = None
    scheduler_name: str | None = None
    tolerations: list[Toleration] | None = None
    host_aliases: list[HostAlias] | None = None
    priority_class_name: str | None = None
    priority: int | None = None
    preemption_policy: str | None = None
    dns_config: PodDNSConfig | None = None
    readiness_gates: list[dict[str, Any]] | None = None
    runtime_class_name: str | None = None
    enable_service_links: bool | None = None
    overhead: dict[str, Quantity] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    # Declared so that Strict field validation accepts manifests using them; Stowage does not act on them.
    scheduling_gates: list[dict[str, Any]] | None = None
    resource_claims: list[dict[str, Any]] | None = None
    os: dict[str, Any] | None = None


class PodTemplateSpec(WireModel):
    metadata: ObjectMeta | None = None
    spec: PodSpec | None = None


class PodIP(WireModel):
    ip: str | None = None


class ContainerStatus(WireModel):
    name: str | None = None
    state: dict[str, Any] | None = None
    last_state: dict[str, Any] | None = None
    ready: bool | None = None
    started: bool | None = None
    restart_count: int | None = None
    image: str | None = None
    image_id: str | None = alias("imageID")
    container_id: str | None = alias("containerID")


class PodStatus(WireModel):
    phase: str | None = None
    conditions: list[Condition] | None = None
    message: str | None = None
    reason: str | None = None
    nominated_node_name: str | None = None
    host_ip: str | None = alias("hostIP")
    host_ips: list[PodIP] | None = alias("hostIPs")
    pod_ip: str | None = alias("podIP")
    pod_ips: list[PodIP] | None = alias("podIPs")
    start_time: str | None = None
    init_container_statuses: list[ContainerStatus] | None = None
    container_statuses: list[ContainerStatus] | None = None
    ephemeral_container_statuses: list[ContainerStatus] | None = None
    qos_class: str | None = alias("qosClass")
