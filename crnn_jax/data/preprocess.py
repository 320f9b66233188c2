"""Image preprocessing shared by training, evaluation and prediction.

Any image Pillow reads (any size, mode or format) becomes a grayscale uint8
array of the model height. Two modes:

- ``'pad'`` (default): keep the aspect ratio, so width follows text length;
  the batcher pads to a width bucket and tells the model each valid width.
- ``'stretch'``: resize to exactly ``height x max_width``, as the seed did.

``fit`` then places an image in its width bucket (squeezed when wider, stretched when
its label needs more frames); padding is masked inside the model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from crnn_jax import models

RESIZE_MODES = ("pad", "stretch")

# Narrowest image kept: the conv stack needs a few columns to produce a frame.
MIN_WIDTH = 8


def to_pil_gray(image) -> Image.Image:
  """A PIL 'L' image from a PIL image or an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array.

  Raises:
    ValueError: for arrays of another shape, or an empty image.
  """
  if isinstance(image, Image.Image):
    img = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
      # Text on a transparent background: composite onto white so ink stays dark.
      rgba = img.convert("RGBA")
      white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      img = Image.alpha_composite(white, rgba)
    out = img.convert("L")
  else:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
      raise ValueError(
          f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {arr.shape}."
      )
    if arr.dtype != np.uint8:
      # Floats are taken as [0, 1] when they fit there, else as [0, 255].
      scale = 255.0 if arr.dtype.kind == "f" and arr.size and float(arr.max()) <= 1.0 else 1.0
      arr = np.clip(np.asarray(arr, np.float32) * scale, 0, 255).round().astype(np.uint8)
    out = Image.fromarray(arr).convert("L") if arr.ndim == 3 else Image.fromarray(arr, "L")
  if out.width == 0 or out.height == 0:
    raise ValueError(f"image is empty (size {out.width}x{out.height}).")
  return out


def resize(
    image, *, height: int, max_width: int, mode: str = "pad", min_width: int = MIN_WIDTH
) -> np.ndarray:
  """Grayscale uint8 (height, w) array: w <= max_width, at least ``min_width``.

  In 'pad' mode the width keeps the aspect ratio, squeezed to ``max_width`` when
  wider (so text is never cut off). In 'stretch' mode the width is ``max_width``.
  """
  if mode not in RESIZE_MODES:
    raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}.")
  img = to_pil_gray(image)
  if mode == "stretch":
    width = max_width
  else:
    width = int(round(img.width * height / img.height))
    width = min(max(width, min_width), max_width)
  if img.size != (width, height):
    img = img.resize((width, height), Image.BILINEAR)
  return np.asarray(img, np.uint8)


def fit(image: np.ndarray, width: int, need_frames: int, *, mode: str = "pad") -> np.ndarray:
  """Fits a (height, w) uint8 array into a bucket ``width`` pixels wide.

  A wider image is squeezed to ``width`` (text is never cut off); an image that gives
  its label fewer than ``need_frames`` frames is stretched until it does; 'stretch'
  mode always returns exactly ``width`` columns. The caller makes sure ``need_frames``
  fits the bucket (``labels.check_label`` with the bucket's frames).
  """
  height = image.shape[0]
  target = width if mode == "stretch" else min(image.shape[1], width)
  target = min(max(target, models.min_width_for_frames(need_frames)), width)
  if target != image.shape[1]:
    image = np.asarray(Image.fromarray(image, "L").resize((target, height), Image.BILINEAR))
  return image
