"""Where decoded training images are cached: memory, disk, or not at all.

Decoded images take ``N * S * S * 3`` bytes (uint8): 49 KB each at 128 px,
150 KB at 224 px, so a million images at 224 px would need ~150 GB. They are
cached in memory only when that fits a budget: ``$TRANSFER_MEMORY_CACHE_MB``
megabytes when set, else 40% of the memory available now (the smaller of
``MemAvailable`` and the cgroup's limit). Over the budget they go to a
tf.data file cache on disk (reading it back is 4-15x faster than decoding
again, see benchmarks/README.md), or nowhere ("none": decoded every epoch)
when the disk lacks the space or the folder is a tmpfs (which is memory).

Example:
    >>> decision = choose_image_cache(100_000, 224, cache_dir="runs/flowers")
    >>> decision.mode, decision.describe()
    ('disk', 'disk in runs/flowers (15.1 GB would exceed the 9.6 GB memory budget; ...)')
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from transfer.core.errors import TransferError

ENV_BUDGET = "TRANSFER_MEMORY_CACHE_MB"
MEMORY_FRACTION = 0.4
DISK_MARGIN = 1.1  # free disk space needed, as a multiple of the estimate (+ 1 GB)
MODES = ("memory", "disk", "none")


@dataclass(frozen=True)
class CacheDecision:
    """How a dataset caches its decoded images, and why.

    ``mode``: "memory" | "disk" | "none"; ``estimated_bytes``: N * S * S * 3;
    ``budget_bytes``: the memory budget compared with; ``path``: the folder
    the disk cache goes in (each dataset makes its own subfolder there,
    removed when the dataset is garbage collected or the process exits).
    """

    mode: str
    estimated_bytes: int
    budget_bytes: int
    reason: str
    path: str | None = None

    def describe(self) -> str:
        where = f"disk in {self.path}" if self.mode == "disk" else self.mode
        return f"{where} ({self.reason})"

    def to_dict(self) -> dict:
        return asdict(self)


def image_cache_bytes(num_images: int, image_size: int) -> int:
    """Bytes of ``num_images`` decoded uint8 images of ``image_size`` squared."""
    return int(num_images) * int(image_size) ** 2 * 3


def gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def available_memory() -> int:
    """Bytes of memory available now: /proc/meminfo's MemAvailable (or sysconf), capped by a cgroup limit."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            available = 4 * 2**30  # unknown platform: assume a modest machine
    try:  # cgroup v2 (containers): what is left under the limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return available


def memory_budget() -> int:
    """Bytes decoded images may take in memory: ``$TRANSFER_MEMORY_CACHE_MB``, else 40% of available memory."""
    text = os.environ.get(ENV_BUDGET, "").strip()
    if not text:
        return int(available_memory() * MEMORY_FRACTION)
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not (megabytes >= 0 and megabytes != float("inf")):
        raise TransferError(
            f"{ENV_BUDGET}={os.environ[ENV_BUDGET]!r} is not a size in megabytes.",
            fix=f"Set it to a number >= 0, e.g. {ENV_BUDGET}=8000 (0 keeps decoded images out of memory), "
                "or unset it to use 40% of the available memory.",
        )
    return int(megabytes * 2**20)


def _is_tmpfs(path: Path) -> bool:
    """Whether ``path`` lies on a tmpfs / ramfs mount (files there are memory)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return False
    resolved, best = str(path.resolve()), ("", "")
    for point, kind in mounts:
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and len(point) > len(best[0]):
            best = (point, kind)
    return best[1] in ("tmpfs", "ramfs")


def choose_image_cache(
    num_images: int, image_size: int, *, cache: "bool | str | CacheDecision" = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> CacheDecision:
    """Decide how ``num_images`` decoded images of ``image_size`` px are cached.

    ``cache``: "auto" (or True) picks by the memory budget; "memory", "disk"
    or "none" (or False) force a mode; a ``CacheDecision`` is returned as is.
    ``cache_dir``: where a disk cache goes (default ``tempfile.gettempdir()``).
    """
    if isinstance(cache, CacheDecision):
        return cache
    mode = {True: "auto", False: "none"}.get(cache, cache) if isinstance(cache, bool) else cache
    if mode not in ("auto", *MODES):
        raise TransferError(f"cache={cache!r} is not an image cache mode.",
                            fix="Use 'auto', 'memory', 'disk' or 'none' (True means 'auto', False 'none').")
    estimate = image_cache_bytes(num_images, image_size)
    budget = memory_budget()
    folder = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
    if mode != "auto":
        return CacheDecision(mode, estimate, budget, f"{gb(estimate)}, chosen by the caller",
                             str(folder) if mode == "disk" else None)
    if estimate <= budget:
        return CacheDecision("memory", estimate, budget, f"{gb(estimate)} of a {gb(budget)} budget")
    over = f"{gb(estimate)} would exceed the {gb(budget)} memory budget; set {ENV_BUDGET} to change"
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the run folder may not exist yet
    if _is_tmpfs(probe):
        return CacheDecision("none", estimate, budget, f"{over}; {folder} is a tmpfs (memory), so images are "
                             "decoded every epoch")
    free = shutil.disk_usage(probe).free
    if free < estimate * DISK_MARGIN + 1e9:
        return CacheDecision("none", estimate, budget, f"{over}; only {gb(free)} free on the disk of {folder}, "
                             "so images are decoded every epoch")
    return CacheDecision("disk", estimate, budget, over, str(folder))
