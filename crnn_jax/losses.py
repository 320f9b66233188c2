"""CTC loss for training: optax's CTC in float32, with impossible alignments masked.

``optax.ctc_loss`` does not fail when a label cannot be aligned to the frames it
is given (label length plus its repeated neighbours exceeds the frame count): it
returns a huge finite value (about 1e5) that would swamp the mean. Such pairs are
masked out of the mean here and counted, so a run can report them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike


def required_frames(labels: ArrayLike, label_paddings: ArrayLike) -> jax.Array:
  """Fewest frames that can emit each label: its length plus one blank per repeated pair.

  Args:
    labels: (B, L) int array.
    label_paddings: (B, L) float array, 1.0 = padded.

  Returns:
    (B,) int32 array.
  """
  labels = jnp.asarray(labels)
  valid = jnp.asarray(label_paddings) < 0.5
  length = valid.sum(axis=1)
  repeats = ((labels[:, 1:] == labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]).sum(axis=1)
  return (length + repeats).astype(jnp.int32)


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    example_mask: ArrayLike | None = None,
):
  """Mean CTC loss over the examples that can be aligned.

  Args:
    logits: (B, T, K) float array of any float dtype; computed in float32.
    logit_paddings: (B, T) float array, 1.0 = padded frame.
    labels: (B, L) int array of class ids (no blanks).
    label_paddings: (B, L) float array, 1.0 = padded position.
    blank_id: the blank class.
    example_mask: optional (B,) array, 0 for examples that are only batch filler.

  Returns:
    loss: scalar float32, the sum of per-example negative log-likelihoods over
      usable examples divided by their number (0 when there are none).
    aux: dict with ``per_example`` (B,) losses (0 where masked), ``usable`` (B,)
      float mask, ``num_infeasible`` (examples masked because their label cannot
      fit the frames) and ``num_usable``.
  """
  logits = jnp.asarray(logits, jnp.float32)
  logit_paddings = jnp.asarray(logit_paddings, jnp.float32)
  label_paddings = jnp.asarray(label_paddings, jnp.float32)
  frames = (logit_paddings < 0.5).sum(axis=1)
  feasible = required_frames(labels, label_paddings) <= frames
  present = (
      jnp.ones(feasible.shape, bool) if example_mask is None else (jnp.asarray(example_mask) > 0)
  )
  usable = feasible & present
  per_example = optax.ctc_loss(logits, logit_paddings, labels, label_paddings, blank_id=blank_id)
  # Rounding can leave a perfectly predicted example at a tiny negative value.
  per_example = jnp.where(usable, jnp.maximum(per_example, 0.0), 0.0)
  num_usable = usable.sum()
  loss = per_example.sum() / jnp.maximum(num_usable, 1)
  aux = {
      "per_example": per_example,
      "usable": usable.astype(jnp.float32),
      "num_infeasible": (present & ~feasible).sum(),
      "num_usable": num_usable,
  }
  return loss, aux
