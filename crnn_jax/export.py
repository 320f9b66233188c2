"""Serialising a trained model with ``jax.export`` so it runs without this project.

The exported function maps preprocessed images to logits and their greedy decoding:

  ``f(images: (b, H, 4*w) uint8, widths: (b,) int32) -> dict`` with
  ``logits (b, w-1, K) float32``, ``logit_paddings (b, w-1)``, ``tokens (b, w-1) int32``
  (greedy, left-justified, -1 padded), ``lengths (b,) int32`` and ``scores (b,)`` (log
  probability of the best path).

Batch ``b`` and width ``4*w`` (``w >= 2``) are symbolic, so one artefact serves any
batch size and every width bucket; the parameters are constants inside it. Images are
what ``Recognizer.preprocess`` gives (grayscale, height H, pixels 0-255), zero-padded
on the right; ``widths`` are the valid widths. ``save`` writes a folder holding the
serialised function (``model.jax_exported``) and ``meta.json`` (charset, height,
buckets, resize mode, input/output contract), which ``crnn_jax/export_loader.py`` --
a standalone file needing only jax, numpy and Pillow -- reads and runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from crnn_jax import charset as charset_lib
from crnn_jax import decode as decode_lib
from crnn_jax import models
from crnn_jax.data import preprocess
from crnn_jax.recognizer import Recognizer

FORMAT = "crnn_jax.export/1"
MODEL_FILE = "model.jax_exported"
META_FILE = "meta.json"


def export_recognizer(
    recognizer: Recognizer,
    *,
    platforms: Sequence[str] | None = None,
    conv_impl: str | None = None,
    compute_dtype: str | None = None,
) -> jax.export.Exported:
  """Exports ``recognizer``'s model and greedy decoding with symbolic batch and width.

  Args:
    recognizer: the model to export (its decode setting does not matter).
    platforms: e.g. ``('cpu', 'cuda')``; default the current backend.
    conv_impl: the convolution implementation traced into the artefact (see
      ``crnn_jax.conv``); default the checkpoint's. ``'auto'`` picks by the exporting
      machine's backend, so export for an accelerator from a CPU with ``'xla'``.
    compute_dtype: the dtype traced into the artefact (``models.COMPUTE_DTYPES``);
      default the recognizer's. ``'auto'`` picks by the exporting machine's backend, as
      ``conv_impl`` does; the outputs are float32 either way.

  Returns:
    the ``jax.export.Exported``; ``.call(images, widths)`` runs it.
  """
  model, variables = recognizer.model, recognizer.variables
  if conv_impl is not None:
    model = model.clone(conv_impl=conv_impl)  # same parameters, another kernel
  if compute_dtype is not None:
    model = model.clone(dtype=models.resolve_compute_dtype(compute_dtype))

  def infer(images, widths):
    # uint8 in: the model scales pixels exactly as in training.
    logits, logit_paddings = model.apply(variables, images, widths, train=False)
    greedy = decode_lib.greedy_decode(logits, logit_paddings, blank_id=charset_lib.BLANK_ID)
    return {
        "logits": logits,
        "logit_paddings": logit_paddings,
        "tokens": greedy.tokens,
        "lengths": greedy.lengths,
        "scores": greedy.scores,
    }

  # A width of 4*w pixels gives w-1 frames; w >= 2 keeps at least one frame.
  b, w = jax.export.symbolic_shape("b, w", constraints=("w >= 2",))
  images = jax.ShapeDtypeStruct((b, recognizer.height, models.WIDTH_STRIDE * w), jnp.uint8)
  widths = jax.ShapeDtypeStruct((b,), jnp.int32)
  return jax.export.export(jax.jit(infer), platforms=platforms)(images, widths)


def export_meta(
    recognizer: Recognizer,
    exported: jax.export.Exported,
    conv_impl: str | None = None,
    compute_dtype: str | None = None,
) -> dict:
  """What a loader needs besides the function: preprocessing, charset, the contract."""
  meta = {
      "format": FORMAT,
      "charset": recognizer.charset.chars,
      "case_fold": recognizer.charset.case_fold,
      "blank_id": charset_lib.BLANK_ID,
      "height": recognizer.height,
      "width_buckets": list(recognizer.width_buckets),
      "width_multiple": models.WIDTH_STRIDE,
      "min_width": preprocess.MIN_WIDTH,
      "resize_mode": recognizer.resize_mode,
      "platforms": list(exported.platforms),
      "conv_impl": conv_impl or recognizer.model.conv_impl,
      "compute_dtype": (
          models.resolve_compute_dtype(compute_dtype)
          if compute_dtype
          else jnp.dtype(recognizer.model.dtype)
      ).name,
      "inputs": {
          "images": "(b, height, W) uint8, W a multiple of width_multiple, "
          "grayscale 0-255, zero-padded on the right",
          "widths": "(b,) int32 valid width of each image",
      },
      "outputs": {
          "logits": "(b, W/4-1, K) float32",
          "logit_paddings": "(b, W/4-1), 1.0 = pad",
          "tokens": "(b, W/4-1) int32 greedy label ids (id i = charset[i-1]), -1 pad",
          "lengths": "(b,) int32",
          "scores": "(b,) float32 log P(best path)",
      },
      "jax_version": jax.__version__,
  }
  if recognizer.checkpoint is not None:
    meta["checkpoint"] = {
        "path": recognizer.checkpoint.where,
        "step": recognizer.checkpoint.step,
        "model": recognizer.checkpoint.meta.get("model"),
    }
  return meta


def save(directory: str, exported: jax.export.Exported, meta: dict) -> None:
  """Writes ``model.jax_exported`` and ``meta.json`` into ``directory`` (created)."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, MODEL_FILE), "wb") as f:
    f.write(exported.serialize())
  with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2, ensure_ascii=False)


def load(directory: str) -> tuple[jax.export.Exported, dict]:
  """Reads what ``save`` wrote: ``(exported, meta)``.

  Raises:
    ValueError: if the folder does not hold an export of this format.
  """
  try:
    with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
      meta = json.load(f)
    if meta.get("format") != FORMAT:
      raise ValueError(
          f"{directory!r} holds format {meta.get('format')!r}; expected " f"{FORMAT!r}."
      )
    with open(os.path.join(directory, MODEL_FILE), "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
  except FileNotFoundError as e:
    raise ValueError(
        f"{directory!r} is not an exported model: {e.filename} is missing. "
        f"Write one with scripts/export.py."
    ) from None
  return exported, meta


def export_checkpoint(
    path: str,
    directory: str,
    *,
    platforms: Sequence[str] | None = None,
    conv_impl: str | None = None,
    compute_dtype: str | None = None,
) -> dict:
  """Exports the checkpoint at ``path`` into ``directory``; returns the meta written."""
  recognizer = Recognizer.from_checkpoint(path)
  exported = export_recognizer(
      recognizer, platforms=platforms, conv_impl=conv_impl, compute_dtype=compute_dtype
  )
  meta = export_meta(recognizer, exported, conv_impl, compute_dtype)
  save(directory, exported, meta)
  return meta
