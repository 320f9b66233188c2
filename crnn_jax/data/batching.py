"""The one batch builder: preprocessed images (and labels) -> a fixed-shape host batch.

Training, evaluation and the ``Recognizer`` all build their batches here, so a batch has
one layout everywhere:

- ``images``: (B, H, W) uint8, each image left-aligned, zeros to the right;
- ``widths``: (B,) int32 valid pixel width (0 for filler rows);
- ``labels``: (B, L) int32 ids padded with 0, and ``label_paddings`` (B, L) float32,
  1.0 where padded (optax's convention), when labels are given;
- ``mask``: (B,) float32, 1.0 for real rows, when asked for (evaluation pads its last
  batch with filler rows instead of dropping examples).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from crnn_jax.data import index as index_lib


def assemble(
    images: Sequence[np.ndarray],
    width: int,
    batch_size: int,
    *,
    labels: Sequence[Sequence[int]] | None = None,
    frames: int | None = None,
    with_mask: bool = False,
) -> dict:
  """A host batch of ``batch_size`` rows from up to that many (H, w <= width) uint8 images.

  Raises:
    ValueError: if there are more images than rows or an image is wider than ``width``.
  """
  if len(images) > batch_size:
    raise ValueError(f"{len(images)} images do not fit a batch of {batch_size}.")
  height = images[0].shape[0] if len(images) else 0
  out_images = np.zeros((batch_size, height, width), np.uint8)
  widths = np.zeros((batch_size,), np.int32)
  for r, img in enumerate(images):
    if img.shape[1] > width:
      raise ValueError(f"image {r} is {img.shape[1]} wide, more than the batch width {width}.")
    out_images[r, :, : img.shape[1]] = img
    widths[r] = img.shape[1]
  batch = {"images": out_images, "widths": widths}
  if labels is not None:
    ids = np.zeros((batch_size, frames), np.int32)
    lengths = np.zeros((batch_size,), np.int32)
    for r, label in enumerate(labels):
      ids[r, : len(label)] = label
      lengths[r] = len(label)
    batch["labels"] = ids
    batch["label_paddings"] = (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32)
  if with_mask:
    batch["mask"] = (np.arange(batch_size) < len(images)).astype(np.float32)
  return batch


def eval_batches(
    index: index_lib.Index,
    batch_size: int,
    height: int,
    batches_per_bucket: Sequence[int] | None = None,
) -> Iterator[tuple[dict, list, list]]:
  """Every example of a cached index once: yields ``(batch, texts, keys)``.

  Args:
    index: a cached ``Index`` (evaluation sets always are).
    batch_size: rows per process per batch.
    height: the model height (for batches of a bucket this process has no example of).
    batches_per_bucket: batches to yield per bucket (the largest over processes, so all
      processes run the same number of steps); default: just enough.
  """
  for b, members in enumerate(index.members):
    need = -(-len(members) // batch_size)
    total = need if batches_per_bucket is None else int(batches_per_bucket[b])
    for j in range(total):
      rows = [index.cache[int(i)] for i in members[j * batch_size : (j + 1) * batch_size]]
      batch = assemble(
          [c.image for c in rows] or [np.zeros((height, 0), np.uint8)],
          index.widths[b],
          batch_size,
          labels=[c.ids for c in rows] or [[]],
          frames=index.frames[b],
          with_mask=True,
      )
      if not rows:
        batch["mask"][:] = 0.0
      yield batch, [c.text for c in rows], [c.key for c in rows]
