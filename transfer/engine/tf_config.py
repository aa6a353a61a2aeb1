"""``TF_CONFIG``, the cluster description of multi-worker training, read and checked.

Every machine of a multi-worker run sets the same ``cluster`` and its own
``task``; ``parse_tf_config`` says where this machine stands, or names what is
wrong in words (``transfer.engine.distribute`` picks the strategy from it).

Example:
    >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')["worker_index"]
    1
"""

from __future__ import annotations

import json
from typing import Any

from transfer.core.errors import TransferError

TASK_TYPES = ("chief", "worker")

TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\' (the same cluster on every machine, '
    "each with its own task index)"
)


def parse_tf_config(text: str) -> dict[str, Any]:
    """Validate a ``TF_CONFIG`` JSON string; return where this task stands.

    Returns ``{"cluster", "task_type", "task_index", "num_workers",
    "worker_index", "is_chief"}``. Task types ``"chief"`` (at most one) and
    ``"worker"`` are accepted; ``worker_index`` counts the chief first, then
    the workers in order. Malformed JSON, a missing ``cluster`` or ``task``,
    other task types (``"ps"``, ``"evaluator"``) or an index out of range raise
    ``TransferError``.

    Example:
        >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
        {'cluster': {'worker': ['a:1', 'b:1']}, 'task_type': 'worker', 'task_index': 1,
         'num_workers': 2, 'worker_index': 1, 'is_chief': False}
    """
    fix = f"Set {TF_CONFIG_EXAMPLE}."
    try:
        config = json.loads(text)
    except (TypeError, ValueError) as error:
        raise TransferError(f"TF_CONFIG is not valid JSON ({error}).", fix=fix) from None
    if not isinstance(config, dict):
        raise TransferError(f"TF_CONFIG must be a JSON object; got {type(config).__name__}.", fix=fix)
    cluster = config.get("cluster")
    everyone = _checked_cluster(cluster, fix)
    task_type, index = _checked_task(config.get("task"), cluster)
    num_chiefs = len(cluster.get("chief", []))
    worker_index = index if task_type == "chief" else num_chiefs + index
    return {
        "cluster": {job: list(cluster[job]) for job in TASK_TYPES if job in cluster},
        "task_type": task_type,
        "task_index": index,
        "num_workers": len(everyone),
        "worker_index": worker_index,
        "is_chief": worker_index == 0,
    }


def _checked_cluster(cluster: Any, fix: str) -> list[str]:
    """Every address of a valid ``cluster`` (the chief first); a ``TransferError`` naming what is wrong."""
    if not isinstance(cluster, dict) or not cluster:
        raise TransferError('TF_CONFIG has no "cluster" object listing the machines.', fix=fix)
    for job, addresses in cluster.items():
        if job not in TASK_TYPES:
            raise TransferError(
                f'TF_CONFIG\'s cluster has a {job!r} job; multi-worker training takes only "chief" '
                f'and "worker" tasks (MultiWorkerMirroredStrategy).',
                fix=f'Remove {job!r} from TF_CONFIG\'s cluster: {TF_CONFIG_EXAMPLE}.',
            )
        if not isinstance(addresses, list) or not addresses:
            raise TransferError(f'TF_CONFIG\'s cluster["{job}"] must be a non-empty list of "host:port".',
                                fix=fix)
        for address in addresses:
            if not _is_address(address):
                raise TransferError(f'TF_CONFIG\'s cluster["{job}"] holds {address!r}, not a "host:port".',
                                    fix=fix)
    if len(cluster.get("chief", [])) > 1:
        raise TransferError(f'TF_CONFIG\'s cluster has {len(cluster["chief"])} "chief" tasks; at most one.',
                            fix='List the other machines under "worker".')
    everyone = [address for job in TASK_TYPES for address in cluster.get(job, [])]
    repeated = sorted({address for address in everyone if everyone.count(address) > 1})
    if repeated:
        raise TransferError(f"TF_CONFIG's cluster lists {', '.join(repeated)} more than once.",
                            fix="Give every task its own host:port.")
    return everyone


def _checked_task(task: Any, cluster: dict) -> tuple[str, int]:
    """The ``task`` object's type and index, checked against ``cluster``."""
    if not isinstance(task, dict):
        raise TransferError('TF_CONFIG has no "task" object saying which machine this is.',
                            fix='Add "task": {"type": "worker", "index": N} with this machine\'s N.')
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        jobs = " or ".join(f'"{job}"' for job in cluster)
        raise TransferError(f"TF_CONFIG's task type {task_type!r} is not a job of its cluster.",
                            fix=f'Set "task": {{"type": {jobs}, "index": N}}.')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        count = len(cluster[task_type])
        raise TransferError(
            f'TF_CONFIG\'s task index {index!r} is out of range: cluster["{task_type}"] has {count} '
            f"{'entry' if count == 1 else 'entries'}.",
            fix=f'Set "task": {{"type": "{task_type}", "index": N}} with 0 <= N < {count}.',
        )
    return task_type, index


def _is_address(value: Any) -> bool:
    """Whether ``value`` is a "host:port" string."""
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    return bool(host) and port.isdigit()
