"""Reading text in images with a trained model: the ``Recognizer``.

``Recognizer.from_checkpoint(path)`` rebuilds the model from the JSON metadata saved
with every checkpoint (model config, charset, width buckets, resize mode;
``crnn_jax.loading``), so no training config is needed. ``recognizer(images)`` takes a list of numpy arrays or PIL
images of any sizes and modes, preprocesses each exactly as training did
(``preprocess.resize`` to the model height, aspect kept, capped at the widest bucket),
groups them by width bucket, pads every batch to ``batch_size`` rows and runs one
jitted function (model + CTC decoding) per batch. Shapes therefore depend only on the
bucket, so the function compiles at most once per width bucket, never per image size.

Unlike training, nothing here depends on a label: an image is never widened to fit
its text, which inference cannot know.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError

from crnn_jax import charset as charset_lib
from crnn_jax import decode as decode_lib
from crnn_jax import loading
from crnn_jax import models
from crnn_jax import weights as weights_lib
from crnn_jax.data import batching, preprocess

DECODE_METHODS = ("greedy", "beam", "lexicon")

# (text, confidence): what the recognizer returns per image or per hypothesis.
Hypothesis = tuple[str, float]


# ----------------------------------------------------------------------------
# Checkpoints and weights files: read by crnn_jax.loading, re-exported here because the
# Recognizer's users found them here first.

Loaded = loading.Loaded
model_from_meta = loading.model_from_meta
load_checkpoint = loading.load_checkpoint
load_weights_file = loading.load_weights_file
load_model = loading.load_model


# ----------------------------------------------------------------------------
# The jitted function: model + decoding, one compilation per input shape.


def _recognize(
    variables: dict,
    images: jax.Array,
    widths: jax.Array,
    trie,
    *,
    model: models.CRNN,
    method: str,
    beam_size: int,
    top_k: int,
    max_length: int | None,
):
  """Images to the ``top_k`` best label sequences.

  Args:
    variables: model variables.
    images: (B, H, W) uint8, padded columns zero.
    widths: (B,) int32 valid widths.
    trie: a ``decode.Trie`` for the lexicon method, else None.

  Returns:
    tokens (B, top_k, L) int32 padded with -1, lengths (B, top_k) int32,
    scores (B, top_k) float32 log-probabilities (-inf: no hypothesis).
  """
  # uint8 in: the model scales pixels exactly as in training.
  logits, logit_paddings = model.apply(variables, images, widths, train=False)
  blank = charset_lib.BLANK_ID
  if method == "greedy":
    r = decode_lib.greedy_decode(logits, logit_paddings, blank_id=blank)
    return r.tokens[:, None], r.lengths[:, None], r.scores[:, None]
  if method == "beam":
    r = decode_lib.prefix_beam_search(
        logits, logit_paddings, beam_size=beam_size, top_k=top_k, blank_id=blank
    )
  else:
    r = decode_lib.lexicon_beam_search(
        logits,
        logit_paddings,
        trie,
        beam_size=beam_size,
        top_k=top_k,
        blank_id=blank,
        max_length=max_length,
    )
  return r.tokens, r.lengths, r.scores


class Recognizer:
  """A trained CRNN with its preprocessing and decoding, callable on images.

  Args:
    model: the ``CRNN`` module.
    variables: its ``{'params', 'batch_stats'}``.
    charset: the charset it was trained with.
    width_buckets: the training width buckets (multiples of 4); an image is resized
      to at most the widest and padded to the narrowest bucket that holds it.
    resize_mode: ``'pad'`` or ``'stretch'``, as in training.
    batch_size: rows per jitted call; partial batches are padded to it.
    decode: ``'greedy'`` (best path), ``'beam'`` (prefix beam search) or
      ``'lexicon'`` (beam search restricted to the words of ``lexicon``).
    beam_size: beams for ``'beam'`` and ``'lexicon'``.
    top_k: hypotheses kept per image by ``candidates`` (beam and lexicon only).
    lexicon: the words for ``'lexicon'``. Words with characters outside the charset
      are left out and counted in ``lexicon_skipped``.

  Raises:
    ValueError: for an unknown decode method, a bad size, or an empty lexicon.
  """

  def __init__(
      self,
      model: models.CRNN,
      variables: dict,
      charset: charset_lib.Charset,
      *,
      width_buckets: Sequence[int],
      resize_mode: str = "pad",
      batch_size: int = 32,
      decode: str = "greedy",
      beam_size: int = 8,
      top_k: int = 1,
      lexicon: Iterable[str] | None = None,
  ):
    if decode not in DECODE_METHODS:
      raise ValueError(f"decode {decode!r} is not one of {DECODE_METHODS}.")
    if resize_mode not in preprocess.RESIZE_MODES:
      raise ValueError(f"resize_mode {resize_mode!r} is not one of {preprocess.RESIZE_MODES}.")
    for name, value in (("batch_size", batch_size), ("beam_size", beam_size), ("top_k", top_k)):
      if int(value) < 1:
        raise ValueError(f"{name} must be at least 1; got {value}.")
    if decode == "greedy" and top_k != 1:
      raise ValueError(
          f"top_k={top_k} needs decode='beam' or 'lexicon'; greedy decoding "
          f"gives one hypothesis."
      )
    if top_k > beam_size:
      raise ValueError(f"top_k={top_k} is more than beam_size={beam_size}.")
    buckets = sorted(int(w) for w in width_buckets)
    if not buckets or any(w % models.WIDTH_STRIDE or w < preprocess.MIN_WIDTH for w in buckets):
      raise ValueError(
          f"width_buckets must be multiples of {models.WIDTH_STRIDE} of at least "
          f"{preprocess.MIN_WIDTH}; got {tuple(width_buckets)}."
      )
    self.model = model
    self.variables = variables
    self.charset = charset
    self.height = model.height
    self.width_buckets = tuple(buckets)
    self.resize_mode = resize_mode
    self.batch_size = int(batch_size)
    self.decode = decode
    self.beam_size = int(beam_size)
    self.top_k = int(top_k)
    self.checkpoint: Loaded | None = None  # set by from_checkpoint
    self.trie, self.lexicon_size, self.lexicon_skipped, max_length = None, 0, 0, None
    if decode == "lexicon":
      self.trie, self.lexicon_size, self.lexicon_skipped, max_length = self._build_trie(lexicon)
    self._fn = jax.jit(
        functools.partial(
            _recognize,
            model=model,
            method=decode,
            beam_size=self.beam_size,
            top_k=self.top_k,
            max_length=max_length,
        )
    )

  def _build_trie(self, lexicon):
    if lexicon is None:
      raise ValueError("decode='lexicon' needs a lexicon (a list of words).")
    words, skipped = set(), 0
    for word in lexicon:
      word = self.charset.normalize(word.strip())
      if not word:
        continue
      if self.charset.unknown_chars(word):
        skipped += 1
      else:
        words.add(word)
    if not words:
      raise ValueError(
          f"The lexicon has no word made of the model's {len(self.charset)} "
          f"characters ({skipped} words had other characters)."
      )
    words = sorted(words)
    trie = decode_lib.build_trie(
        words,
        num_classes=self.charset.num_classes,
        charset=self.charset,
        blank_id=charset_lib.BLANK_ID,
    )
    return trie, len(words), skipped, max(len(w) for w in words)

  @classmethod
  def from_checkpoint(cls, path: str, **kwargs) -> "Recognizer":
    """A recognizer for the checkpoint at ``path`` (see ``load_checkpoint``).

    Keyword arguments are those of ``Recognizer`` (batch size, decoding); the width
    buckets and resize mode come from the checkpoint unless given.
    """
    return cls._from_loaded(load_checkpoint(path), **kwargs)

  @classmethod
  def _from_loaded(cls, loaded: Loaded, **kwargs) -> "Recognizer":
    data = loaded.meta.get("data", {})
    kwargs.setdefault("width_buckets", data.get("width_buckets", (128,)))
    kwargs.setdefault("resize_mode", data.get("resize_mode", "pad"))
    recognizer = cls(loaded.model, loaded.variables, loaded.charset, **kwargs)
    recognizer.checkpoint = loaded
    return recognizer

  @classmethod
  def from_weights(cls, path: str, **kwargs) -> "Recognizer":
    """A recognizer for a weights file (see ``weights.save_weights``).

    Keyword arguments are those of ``Recognizer``; the width buckets and resize mode
    come from the file unless given. ``recognizer.checkpoint`` describes the file.

    Raises:
      ValueError: if the file is missing or corrupt.
    """
    return cls._from_loaded(load_weights_file(path), **kwargs)

  @classmethod
  def pretrained(cls, **kwargs) -> "Recognizer":
    """The pretrained seed CRNN shipped with the package (a-z A-Z 0-9, height 32).

    Reads ``crnn_jax/pretrained/crnn_seed.npz``; see docs/pretrained.md for its data and
    accuracy. Keyword arguments are those of ``Recognizer`` (batch size, decoding).

    Raises:
      ValueError: if this copy of the package has no pretrained model yet, or the file
        is corrupt.
    """
    return cls.from_weights(weights_lib.PRETRAINED, **kwargs)

  @property
  def max_width(self) -> int:
    return self.width_buckets[-1]

  def preprocess(self, image) -> np.ndarray:
    """One image (PIL or array, any size or mode) -> (height, w) uint8, as in training.

    Raises:
      ValueError: for an array of unusable shape or an empty image.
    """
    return preprocess.resize(
        image, height=self.height, max_width=self.max_width, mode=self.resize_mode
    )

  def bucket_of(self, width: int) -> int:
    """The narrowest width bucket that holds an image ``width`` pixels wide."""
    return next(w for w in self.width_buckets if w >= width)

  def recognize_preprocessed(self, arrays: Sequence[np.ndarray]) -> list[list[Hypothesis]]:
    """Hypotheses, best first, for images already through ``preprocess``.

    Returns:
      per image a list of ``(text, confidence)``: one for greedy decoding, up to
      ``top_k`` for beam search. Confidence is the probability of the best path
      (greedy) or of the label sequence over all its alignments (beam, lexicon).
      An image for which the lexicon search keeps no whole word gets ``[('', 0.0)]``.
    """
    out: list[list[Hypothesis] | None] = [None] * len(arrays)
    by_bucket: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
      if a.ndim != 2 or a.shape[0] != self.height or a.dtype != np.uint8:
        raise ValueError(
            f"arrays[{i}] must be ({self.height}, w) uint8 from preprocess(); "
            f"got {a.dtype} {a.shape}."
        )
      by_bucket.setdefault(self.bucket_of(a.shape[1]), []).append(i)
    for width, rows in sorted(by_bucket.items()):
      for start in range(0, len(rows), self.batch_size):
        chunk = rows[start : start + self.batch_size]
        batch = batching.assemble([arrays[i] for i in chunk], width, self.batch_size)
        tokens, lengths, scores = jax.device_get(
            self._fn(self.variables, batch["images"], batch["widths"], self.trie)
        )
        for j, i in enumerate(chunk):
          out[i] = self._hypotheses(tokens[j], lengths[j], scores[j])
    return out

  def _hypotheses(self, tokens, lengths, scores) -> list[Hypothesis]:
    hyps = [
        (self.charset.decode(t[:n]), float(np.exp(s)))
        for t, n, s in zip(tokens, lengths, scores)
        if np.isfinite(s)
    ]
    return hyps or [("", 0.0)]

  def candidates(self, images: Sequence[Any]) -> list[list[Hypothesis]]:
    """Up to ``top_k`` ``(text, confidence)`` hypotheses per image, best first.

    Args:
      images: a list of PIL images or numpy arrays ((H, W), (H, W, 1|3|4); uint8, or
        float in [0, 1]) of any sizes.

    Raises:
      ValueError: if ``images`` is not a list of images, naming the bad item.
    """
    if isinstance(images, (Image.Image, np.ndarray)):
      raise ValueError(
          "images must be a list of images; wrap a single image in a list "
          "(a numpy batch: list(batch))."
      )
    arrays = []
    for i, image in enumerate(images):
      try:
        arrays.append(self.preprocess(image))
      except (ValueError, TypeError) as e:
        raise ValueError(f"images[{i}]: {e}") from None
    return self.recognize_preprocessed(arrays)

  def __call__(self, images: Sequence[Any]) -> list[Hypothesis]:
    """The best ``(text, confidence)`` per image; see ``candidates``."""
    return [h[0] for h in self.candidates(images)]

  def warmup(self) -> None:
    """Compiles the function for every width bucket now (e.g. before timing)."""
    for width in self.width_buckets:
      self.recognize_preprocessed([np.zeros((self.height, width), np.uint8)])


# ----------------------------------------------------------------------------
# Files.


def image_extensions() -> set[str]:
  """Lower-case file extensions of the formats this Pillow can read."""
  Image.init()
  return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def expand_paths(inputs: Iterable[str]) -> list[str]:
  """Files named, plus the image files under folders named (walked, sorted).

  A file given by name is kept whatever its extension, so a bad one is reported; in
  a folder only files with an image extension Pillow knows are taken.
  """
  exts = image_extensions()
  out = []
  for item in inputs:
    if os.path.isdir(item):
      for root, dirs, files in os.walk(item):
        dirs.sort()
        out.extend(
            os.path.join(root, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in exts
        )
    else:
      out.append(item)
  return out


def read_image(path: str) -> Image.Image:
  """Opens and fully decodes an image file.

  Raises:
    ValueError: saying why the file cannot be used (missing, not an image, truncated).
  """
  if not os.path.isfile(path):
    raise ValueError("file not found")
  try:
    with Image.open(path) as im:
      im.load()
      image = im.copy()
      image.format = im.format  # preprocess applies EXIF rotation to JPEGs
  except (
      UnidentifiedImageError,
      OSError,
      SyntaxError,
      ValueError,
      Image.DecompressionBombError,
  ) as e:
    raise ValueError(f"unreadable image ({e})") from None
  return image


class FileResult(NamedTuple):
  """What became of one file: its hypotheses (best first), or the error."""

  path: str
  hypotheses: list[Hypothesis] | None
  error: str | None


def recognize_files(
    recognizer: Recognizer, paths: Sequence[str], *, chunk: int = 256
) -> Iterator[FileResult]:
  """Recognises image files in order; a bad file gives an error result, the rest still run.

  Args:
    recognizer: the model.
    paths: image files (see ``expand_paths``).
    chunk: files read and preprocessed at a time.
  """
  for start in range(0, len(paths), chunk):
    results: list[FileResult | None] = []
    arrays, slots = [], []
    for path in paths[start : start + chunk]:
      try:
        arrays.append(recognizer.preprocess(read_image(path)))
        slots.append(len(results))
        results.append(None)
      except ValueError as e:
        results.append(FileResult(path, None, str(e)))
    for slot, hyps in zip(slots, recognizer.recognize_preprocessed(arrays)):
      results[slot] = FileResult(paths[start + slot], hyps, None)
    yield from results
