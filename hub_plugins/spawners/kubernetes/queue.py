"""Pods that wait for GPUs, in words: a queue position and the scheduler's reason (pure).

Kubernetes has no queue for pods: an unschedulable pod stays Pending with the condition
``PodScheduled=False, reason=Unschedulable`` and the scheduler's message ("0/3 nodes are
available: 3 Insufficient nvidia.com/gpu."), and is retried whenever the cluster changes. So
the user would watch a silent spinner until ``start_timeout`` (z2jh#3801, kubespawner#795).
gpulab shows where the pod stands instead: its position among the unschedulable user pods
asking for the same GPU resources, oldest first (the scheduler retries older pods first when
priorities are equal), and what the scheduler says.
"""

from __future__ import annotations

from .nodes import pod_requests


def unschedulable_reason(pod: dict | None) -> str | None:
    """The scheduler's message when the pod cannot be placed now, else None."""
    if not pod or (pod.get("status") or {}).get("phase") != "Pending" or (pod.get("spec") or {}).get("nodeName"):
        return None
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            # the part after "preemption:" only repeats that preempting would not help
            return (cond.get("message") or "no node fits").split(" preemption:")[0].strip()
    return None


def _created(pod: dict) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return meta.get("creationTimestamp") or "", meta.get("name") or ""


def queue_position(pod: dict, pods: list[dict]) -> tuple[int, int]:
    """(1-based position, how many wait) among unschedulable pods asking for the same GPU
    resources as ``pod`` (the pods of the same namespace that the hub watches)."""
    wants = set(pod_requests(pod))
    waiting = [p for p in pods if unschedulable_reason(p) is not None and set(pod_requests(p)) == wants]
    if not any(_created(p) == _created(pod) for p in waiting):
        waiting.append(pod)
    waiting.sort(key=_created)
    mine = _created(pod)
    return next(i for i, p in enumerate(waiting, 1) if _created(p) == mine), len(waiting)


def queue_message(pod: dict, pods: list[dict]) -> str | None:
    """The progress-page line for a pod that waits for room, or None if it does not wait."""
    reason = unschedulable_reason(pod)
    if reason is None:
        return None
    wants = pod_requests(pod)
    what = ", ".join(f"{v} {k}" for k, v in sorted(wants.items())) or "CPU/memory"
    position, total = queue_position(pod, pods)
    return (f"Waiting for room in the cluster ({what}): position {position} of {total} in the queue. "
            f"The scheduler says: {reason}")
