"""Image preprocessing shared by training, evaluation and prediction.

Any image Pillow reads (any size, mode or format) becomes a grayscale uint8
array of the model height. Two modes:

- ``'pad'`` (default): keep the aspect ratio, so width follows text length;
  the batcher pads to a width bucket and tells the model each valid width.
- ``'stretch'``: resize to exactly ``height x max_width``, as the seed did.

The model sees ``pixels / 255`` as float32; padding is masked inside the model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

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
          f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {arr.shape}.")
    if arr.dtype != np.uint8:
      # Floats are taken as [0, 1] when they fit there, else as [0, 255].
      scale = 255.0 if arr.dtype.kind == "f" and arr.size and float(arr.max()) <= 1.0 else 1.0
      arr = np.clip(np.asarray(arr, np.float32) * scale, 0, 255).round().astype(np.uint8)
    out = Image.fromarray(arr).convert("L") if arr.ndim == 3 else Image.fromarray(arr, "L")
  if out.width == 0 or out.height == 0:
    raise ValueError(f"image is empty (size {out.width}x{out.height}).")
  return out


def resize(image, *, height: int, max_width: int, mode: str = "pad",
           min_width: int = MIN_WIDTH) -> np.ndarray:
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


def widen(image: np.ndarray, width: int) -> np.ndarray:
  """Stretches a (height, w) uint8 array horizontally to ``width`` (for labels needing more frames)."""
  if image.shape[1] >= width:
    return image
  return np.asarray(Image.fromarray(image, "L").resize((width, image.shape[0]), Image.BILINEAR))


def to_model_input(images: np.ndarray) -> np.ndarray:
  """uint8 (B, H, W) -> float32 (B, H, W, 1) in [0, 1]."""
  return (np.asarray(images, np.float32) / 255.0)[..., None]
