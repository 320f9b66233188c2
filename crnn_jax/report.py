"""What a run shows people: TensorBoard scalars and images of sample predictions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def predictions_image(
    samples: Sequence[tuple[np.ndarray, str, str]], *, scale: int = 2, text_width: int = 360
) -> np.ndarray:
  """A grid image: each row an input image with its truth and prediction.

  Args:
    samples: (image uint8 (H, W), truth, prediction) triples.

  Returns:
    (H_total, W_total, 3) uint8 RGB array; correct predictions green, wrong red.
  """
  if not samples:
    return np.full((16, 16, 3), 255, np.uint8)
  h = max(s[0].shape[0] for s in samples) * scale
  w = max(s[0].shape[1] for s in samples) * scale
  row_h = max(h, 28) + 4
  canvas = Image.new("RGB", (w + text_width + 12, row_h * len(samples)), "white")
  draw = ImageDraw.Draw(canvas)
  for i, (img, truth, pred) in enumerate(samples):
    y = i * row_h + 2
    tile = Image.fromarray(img, "L").resize(
        (img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST
    )
    canvas.paste(tile.convert("RGB"), (4, y))
    color = (0, 130, 0) if truth == pred else (200, 0, 0)
    draw.text((w + 10, y), f"truth: {truth}", fill=(0, 0, 0))
    draw.text((w + 10, y + 12), f"pred:  {pred}", fill=color)
  return np.asarray(canvas)


class Writer:
  """TensorBoard event files in ``workdir/tensorboard`` and sample PNGs in ``workdir/samples``."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter

    self.workdir = workdir
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, values: dict):
    for k, v in values.items():
      self.tb.add_scalar(k, float(v), step)
    self.tb.flush()

  def samples(self, step: int, samples):
    grid = predictions_image(samples)
    self.tb.add_image("eval/predictions", grid, step, dataformats="HWC")
    os.makedirs(os.path.join(self.workdir, "samples"), exist_ok=True)
    Image.fromarray(grid).save(os.path.join(self.workdir, "samples", f"step_{step:07d}.png"))
    self.tb.flush()

  def close(self):
    self.tb.close()
