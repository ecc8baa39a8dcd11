"""Job helpers shared by the API server, the store and the Job controller (SEMANTICS J1–J15)."""
from __future__ import annotations

from typing import Any, Iterable

Obj = dict[str, Any]

CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
INDEX_FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
DEFAULT_BACKOFF_LIMIT = 6
MAX_INT32 = 2**31 - 1


def manual_selector(job: Obj) -> bool:
    return (job.get("spec") or {}).get("manualSelector") is True


def generate_selector(job: Obj) -> None:
    """J2, Kubernetes' job strategy ``generateSelector``: a job without ``manualSelector`` selects its own uid.

    Needs the final name and uid, so the store calls it once it has assigned them. Labels the user set are
    left as they are; validation refuses them when they differ.
    """
    if manual_selector(job):
        return
    meta = job.setdefault("metadata", {})
    spec = job.setdefault("spec", {})
    template = spec.get("template")
    if not isinstance(template, dict):
        return
    tmeta = template.setdefault("metadata", {})
    labels = tmeta.get("labels") if isinstance(tmeta.get("labels"), dict) else {}
    # Kubernetes' defaulting makes an unlabelled job's labels the very map of its template's, so the job shows
    # the generated labels too (as it does on every read there).
    shared = not meta.get("labels") or meta.get("labels") == labels
    labels = dict(labels)
    for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
        labels.setdefault(key, str(meta.get("name") or ""))
    for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
        labels.setdefault(key, str(meta.get("uid") or ""))
    tmeta["labels"] = labels
    if shared:
        meta["labels"] = dict(labels)
    selector = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    match = dict(selector.get("matchLabels") or {})
    match.setdefault(CONTROLLER_UID_LABEL, str(meta.get("uid") or ""))
    spec["selector"] = {**selector, "matchLabels": match}


def is_indexed(job: Obj) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def format_indexes(indexes: Iterable[int]) -> str:
    """Kubernetes' compressed form of a set of indexes: ``"0-2,5,7-8"``."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_indexes(text: str | None) -> set[int]:
    out: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            start, end = int(low), int(high or low)
        except ValueError:
            continue
        out.update(range(start, end + 1))
    return out


def pod_index(pod: Obj) -> int | None:
    """An Indexed job's pod's completion index, from its annotation (or, as Kubernetes falls back, its label)."""
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(COMPLETION_INDEX)
    if raw is None:
        raw = (meta.get("labels") or {}).get(COMPLETION_INDEX)
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


POD_FAILURE_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")


def _exit_code_matches(statuses: list[Obj], requirement: Obj) -> Obj | None:
    """The first container, of the one named or any, that ended with a non-zero code the requirement takes."""
    values = requirement.get("values") or []
    for status in statuses:
        terminated = (status.get("state") or {}).get("terminated")
        if not isinstance(terminated, dict):
            continue  # still stopping: no exit code to match yet
        name = requirement.get("containerName")
        if name is not None and name != status.get("name"):
            continue
        code = terminated.get("exitCode")
        if not code:
            continue
        operator = requirement.get("operator")
        if (operator == "In" and code in values) or (operator == "NotIn" and code not in values):
            return status
    return None


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> tuple[str | None, bool, str | None]:
    """J13, Kubernetes' matchPodFailurePolicy: for a failed pod, (FailJob's message, whether the failure counts
    toward the backoff limit and status.failed, the action of the first rule it matches)."""
    if not policy:
        return None, True, None
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        exit_codes = rule.get("onExitCodes")
        if isinstance(exit_codes, dict):
            container = (_exit_code_matches(status.get("containerStatuses") or [], exit_codes)
                         or _exit_code_matches(status.get("initContainerStatuses") or [], exit_codes))
            if container is None:
                continue
            code = container["state"]["terminated"]["exitCode"]
            message = (f"Container {container.get('name')} for pod {where} failed with exit code {code} matching "
                       f"{action} rule at index {index}")
        elif rule.get("onPodConditions"):
            patterns = rule["onPodConditions"]
            condition = next((c for c in status.get("conditions") or [] for p in patterns
                              if c.get("type") == p.get("type") and c.get("status") == p.get("status", "True")), None)
            if condition is None:
                continue
            message = f"Pod {where} has condition {condition.get('type')} matching {action} rule at index {index}"
        else:
            continue
        if action == "Ignore":
            return None, False, action
        if action == "FailJob":
            return message, True, action
        if action in ("Count", "FailIndex"):
            return None, True, action
    return None, True, None


def success_policy_rule(policy: Obj | None, done: set[int]) -> int | None:
    """J14, Kubernetes' matchSuccessPolicy: the index of the first rule the succeeded indexes meet, or None.
    A rule with succeededIndexes needs all of them (or succeededCount of them); one with only
    succeededCount needs that many indexes."""
    for index, rule in enumerate((policy or {}).get("rules") or []):
        wanted = rule.get("succeededIndexes")
        count = rule.get("succeededCount")
        if wanted is not None:
            named = parse_indexes(str(wanted))
            met = len(named & done)
            if (count is None and met == len(named)) or (count is not None and met >= int(count)):
                return index
        elif count is not None and len(done) >= int(count):
            return index
    return None
