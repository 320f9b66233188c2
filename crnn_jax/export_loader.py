"""Runs a CRNN exported by ``scripts/export.py`` with only jax, numpy and Pillow.

This file does not import crnn_jax: copy it next to an export folder and run

  python export_loader.py EXPORT_DIR IMAGE [IMAGE ...]

to print ``path<TAB>text<TAB>confidence`` per image, or use ``ExportedRecognizer(dir)``
from Python. The preprocessing repeats ``crnn_jax.data.preprocess.resize`` (grayscale,
EXIF rotation for JPEGs, transparency onto white, bilinear resize to the model height
keeping the aspect ratio, at most the widest bucket), and images are padded to the
training width buckets in batches of a fixed size, so each bucket compiles once.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from PIL import Image, ImageOps

FORMAT = "crnn_jax.export/1"


def to_gray(image) -> Image.Image:
  """A PIL 'L' image from a PIL image or an (H, W[, 1|3|4]) array (uint8, or float in [0, 1])."""
  if isinstance(image, Image.Image):
    img = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
      rgba = img.convert("RGBA")
      img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    out = img.convert("L")
  else:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
      raise ValueError(
          f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); " f"got shape {arr.shape}."
      )
    if arr.dtype != np.uint8:
      scale = 255.0 if arr.dtype.kind == "f" and arr.size and float(arr.max()) <= 1.0 else 1.0
      arr = np.clip(np.asarray(arr, np.float32) * scale, 0, 255).round().astype(np.uint8)
    out = Image.fromarray(arr).convert("L") if arr.ndim == 3 else Image.fromarray(arr, "L")
  if out.width == 0 or out.height == 0:
    raise ValueError(f"image is empty (size {out.width}x{out.height}).")
  return out


def resize(image, *, height: int, max_width: int, mode: str, min_width: int) -> np.ndarray:
  """(height, w) uint8, as the model was trained on."""
  img = to_gray(image)
  if mode == "stretch":
    width = max_width
  else:
    width = min(max(int(round(img.width * height / img.height)), min_width), max_width)
  if img.size != (width, height):
    img = img.resize((width, height), Image.BILINEAR)
  return np.asarray(img, np.uint8)


class ExportedRecognizer:
  """An exported model with its preprocessing and greedy decoding.

  Args:
    directory: a folder written by ``scripts/export.py``.
    batch_size: rows per call; partial batches are padded to it.
  """

  def __init__(self, directory: str, *, batch_size: int = 32):
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
      self.meta = json.load(f)
    if self.meta.get("format") != FORMAT:
      raise ValueError(
          f"{directory!r} holds format {self.meta.get('format')!r}; "
          f"this loader reads {FORMAT!r}."
      )
    with open(os.path.join(directory, "model.jax_exported"), "rb") as f:
      self.exported = jax.export.deserialize(bytearray(f.read()))
    self.batch_size = batch_size
    self.buckets = sorted(self.meta["width_buckets"])

  def preprocess(self, image) -> np.ndarray:
    m = self.meta
    return resize(
        image,
        height=m["height"],
        max_width=self.buckets[-1],
        mode=m["resize_mode"],
        min_width=m["min_width"],
    )

  def run(self, images: np.ndarray, widths: np.ndarray) -> dict:
    """The exported function on a padded batch: ``images (B, H, W) uint8``, ``widths (B,)``."""
    out = self.exported.call(np.asarray(images, np.uint8), np.asarray(widths, np.int32))
    return {k: np.asarray(v) for k, v in out.items()}

  def __call__(self, images) -> list[tuple[str, float]]:
    """``(text, confidence)`` per image: greedy decoding, confidence of the best path."""
    return self.recognize_preprocessed([self.preprocess(im) for im in images])

  def recognize_preprocessed(self, arrays) -> list[tuple[str, float]]:
    """As ``__call__``, for (height, w) uint8 arrays from ``preprocess``."""
    chars = self.meta["charset"]
    out = [None] * len(arrays)
    groups = {}
    for i, a in enumerate(arrays):
      groups.setdefault(next(w for w in self.buckets if w >= a.shape[1]), []).append(i)
    for width, rows in sorted(groups.items()):
      for start in range(0, len(rows), self.batch_size):
        chunk = rows[start : start + self.batch_size]
        batch = np.zeros((self.batch_size, self.meta["height"], width), np.uint8)
        widths = np.zeros((self.batch_size,), np.int32)
        for j, i in enumerate(chunk):
          batch[j, :, : arrays[i].shape[1]] = arrays[i]
          widths[j] = arrays[i].shape[1]
        r = self.run(batch, widths)
        for j, i in enumerate(chunk):
          ids = r["tokens"][j, : r["lengths"][j]]
          out[i] = ("".join(chars[k - 1] for k in ids), float(np.exp(r["scores"][j])))
    return out


def main(argv: list[str]) -> int:
  if len(argv) < 3:
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2
  recognizer = ExportedRecognizer(argv[1])
  paths, images, failed = [], [], 0
  for path in argv[2:]:
    try:
      with Image.open(path) as im:
        im.load()
        image = im.copy()
        image.format = im.format  # EXIF rotation applies to JPEGs
      images.append(recognizer.preprocess(image))
      paths.append(path)
    except Exception as e:  # noqa: BLE001 -- one bad file must not stop the others
      failed += 1
      print(f"error: {path}: {e}", file=sys.stderr)
  for path, (text, conf) in zip(paths, recognizer.recognize_preprocessed(images)):
    print(f"{path}\t{text}\t{conf:.4f}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
