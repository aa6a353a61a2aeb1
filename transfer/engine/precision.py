"""Numeric precision for training: float32, or mixed float16 / bfloat16.

``--precision mixed`` computes in 16 bits and keeps variables (and the
classifier's scores) in float32: float16 on a GPU (with loss scaling, so
small gradients do not underflow), bfloat16 on a CPU that has native
bfloat16 instructions (AVX512-BF16 or AMX). On a CPU without them bfloat16
is emulated and slower than float32 (measured 0.61x on this project's CI
CPU, see benchmarks/README.md), so ``mixed`` falls back to float32 there and
says so. ``float16`` / ``bfloat16`` force a policy whatever the hardware.

Example:
    >>> choice = resolve_precision("mixed")
    >>> choice.policy, choice.reason
    ('float32', 'this CPU has no native bfloat16 (avx512_bf16 / amx_bf16), where mixed precision is slower')
    >>> with dtype_policy(choice.policy):
    ...     model = build_model()
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from transfer.core.errors import TransferError

PRECISIONS = ("float32", "mixed", "float16", "bfloat16")
_POLICIES = {"float32": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclass(frozen=True)
class PrecisionChoice:
    """The Keras dtype policy a ``--precision`` value resolved to, and why."""

    requested: str
    policy: str  # "float32" | "mixed_float16" | "mixed_bfloat16"
    reason: str

    @property
    def loss_scaling(self) -> bool:
        """float16 needs loss scaling; bfloat16 has float32's exponent range and does not."""
        return self.policy == "mixed_float16"


def resolve_precision(precision: str, *, has_gpu: bool | None = None, cpu_flags: set[str] | None = None) -> PrecisionChoice:
    """Turn ``"float32" | "mixed" | "float16" | "bfloat16"`` into a Keras dtype policy.

    ``has_gpu`` / ``cpu_flags`` default to what this machine has.

    Example:
        >>> resolve_precision("mixed", has_gpu=True).policy
        'mixed_float16'
    """
    if precision not in PRECISIONS:
        raise TransferError(f"Unknown precision {precision!r}.", fix=f"Use one of {', '.join(PRECISIONS)}.")
    if precision != "mixed":
        return PrecisionChoice(precision, _POLICIES[precision], "requested")
    if has_gpu is None:
        has_gpu = _has_gpu()
    if has_gpu:
        return PrecisionChoice(precision, "mixed_float16", "GPU: float16 compute with loss scaling")
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return PrecisionChoice(precision, "mixed_bfloat16", "CPU with native bfloat16")
    return PrecisionChoice(
        precision, "float32", "this CPU has no native bfloat16 (avx512_bf16 / amx_bf16), where mixed precision is slower"
    )


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Build layers under Keras dtype ``policy``; the previous global policy comes back on exit.

    Layers remember the policy they were built with (and save it), so only
    model construction needs to be inside the block.

    Example:
        >>> with dtype_policy("mixed_bfloat16"):
        ...     layer = keras.layers.Dense(4)
        >>> layer.compute_dtype
        'bfloat16'
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def with_loss_scaling(optimizer, choice_or_model) -> object:
    """``optimizer`` wrapped in Keras's dynamic ``LossScaleOptimizer`` when float16 needs it.

    ``choice_or_model`` is a ``PrecisionChoice`` or a model (float16 if any
    layer computes in float16, e.g. one loaded from a checkpoint).
    """
    import keras

    if isinstance(choice_or_model, PrecisionChoice):
        needed = choice_or_model.loss_scaling
    else:
        from transfer.backbones.nesting import leaf_layers

        needed = any(getattr(layer, "compute_dtype", None) == "float16" for layer in leaf_layers(choice_or_model))
    if needed and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()  # not Linux: no way to tell cheaply, assume no native bfloat16
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
