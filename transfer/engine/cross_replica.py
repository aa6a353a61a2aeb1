"""Batch-level sums over every replica of a distributed training step, for losses that are ratios.

Under a ``tf.distribute`` strategy each replica computes the loss of its share
of the global batch and the replicas' gradients are *summed*. Keras's own
losses return ``mean / num_replicas`` for that reason; a loss that divides
by a batch-level count itself (the positives of a detection batch, the scored
pixels of a segmentation batch, a Dice ratio over the whole batch) must divide
by the count of the *global* batch instead, or the step differs from a
single-device step of the same batch (``num_replicas`` times the gradient, and
each replica normalized by its own count). Outside a strategy, and with one
replica, these are the identity, so single-device losses are unchanged.

Example:
    >>> total = global_batch_sum(tf.reduce_sum(valid))    # scored pixels of the global batch
    >>> share = tf.reduce_sum(per_pixel) / total           # this replica's share of the loss
"""

from __future__ import annotations


def replicas_in_step() -> int:
    """How many replicas run the current step: ``num_replicas_in_sync`` in a replica context,
    1 outside any strategy or in a cross-replica context (a loss called directly).

    Example:
        >>> replicas_in_step()   # eager, no strategy
        1
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def global_batch_sum(value):
    """``value`` (a tensor, or a list of tensors) summed over every replica of the current step;
    ``value`` itself with one replica or outside a step. Differentiable: the gradient of an
    all-sum is an all-sum (``tf.distribute.ReplicaContext.all_reduce``).

    Every replica must call it, in the same order (it is a collective).

    Example:
        >>> positives = global_batch_sum(tf.reduce_sum(positive))
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or int(context.num_replicas_in_sync) <= 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
