"""Which examples of a source fall into which width bucket, read once at start-up.

``build_index`` goes over this process's share of a source (``shard_range``), runs every
label through ``labels.check_label``, and records each usable example under the
narrowest width bucket that holds its preprocessed image and gives its label enough
frames. Small sources are *cached*: their images are decoded and preprocessed once and
kept in memory (a few thousand real crops take a few MB). Large ones (MJSynth, big TFDS
sets) are indexed from labels and image headers alone and read per batch in the
loader's worker processes. Which of the two is a property of the source and its size,
not a second pipeline: both give the same ``Index``.

Rendered sources (``synth:``) are not indexed at all for training: their images are
made as batches need them (see ``loader``); evaluation caches them like any small set.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Sequence

import numpy as np

from crnn_jax import charset as charset_lib
from crnn_jax import models
from crnn_jax.data import labels as labels_lib
from crnn_jax.data import preprocess, readers

# Sources with at most this many examples (per process) are decoded once and kept in
# memory: 200k word crops at 32 x ~100 pixels take ~640 MB.
CACHE_LIMIT = 200_000


@dataclasses.dataclass
class Cached:
  """One preprocessed example kept in memory: (height, w) uint8 image, label ids and text."""

  image: np.ndarray
  ids: list
  text: str
  key: str


@dataclasses.dataclass
class Index:
  """This process's usable examples of a source, by width bucket.

  Attributes:
    source: the source (travels to loader worker processes).
    widths: bucket widths, increasing.
    frames: frames per bucket (``models.num_frames``).
    members: per bucket, the source indices of its examples, in source order.
    report: what was seen and skipped.
    cache: source index -> ``Cached`` for a cached source; None when read per batch.
  """

  source: readers.Source
  widths: list
  frames: list
  members: list
  report: labels_lib.DataReport
  cache: dict | None = None

  def counts(self) -> np.ndarray:
    return np.array([len(m) for m in self.members], np.int64)

  def __len__(self) -> int:
    return int(self.counts().sum())

  def merge_up(self, counts: Sequence[int], threshold: int) -> "Index":
    """Moves the members of buckets with fewer than ``threshold`` examples to the next wider one.

    Args:
      counts: per-bucket counts the decision is based on; pass the smallest over all
        processes so every process merges the same buckets.
      threshold: e.g. the per-process batch size, so every kept bucket fills a batch.

    Returns:
      an ``Index`` whose buckets (but possibly the widest) each hold ``threshold``
      examples on every process. Examples keep their order.
    """
    widths, frames, members = [], [], []
    carry, carried = np.zeros((0,), np.int64), 0
    for i, m in enumerate(self.members):
      count = int(counts[i]) + carried
      m = np.concatenate([carry, m])
      if i + 1 < len(self.members) and count < threshold:
        carry, carried = m, count
        continue
      carry, carried = np.zeros((0,), np.int64), 0
      widths.append(self.widths[i])
      frames.append(self.frames[i])
      members.append(m)
    return dataclasses.replace(self, widths=widths, frames=frames, members=members)


def check_buckets(
    width_buckets: Sequence[int], unknown_chars: str = "skip", resize_mode: str = "pad"
) -> tuple[list, list]:
  """The sorted width buckets and their frame counts, after checking the data options.

  Raises:
    ValueError: naming the option, for unusable widths or an unknown mode.
  """
  buckets = sorted(set(int(w) for w in width_buckets))
  if not buckets or any(w % models.WIDTH_STRIDE or w < preprocess.MIN_WIDTH for w in buckets):
    raise ValueError(
        f"data.width_buckets must be multiples of {models.WIDTH_STRIDE}, at least "
        f"{preprocess.MIN_WIDTH}; got {tuple(width_buckets)}."
    )
  if unknown_chars not in labels_lib.UNKNOWN_CHARS_MODES:
    raise ValueError(
        f"data.unknown_chars must be one of {labels_lib.UNKNOWN_CHARS_MODES}; "
        f"got {unknown_chars!r}."
    )
  if resize_mode not in preprocess.RESIZE_MODES:
    raise ValueError(
        f"data.resize_mode must be one of {preprocess.RESIZE_MODES}; got " f"{resize_mode!r}."
    )
  return buckets, [int(models.num_frames(w)) for w in buckets]


def shard_range(n: int, index: int, count: int) -> range:
  """The contiguous share of ``range(n)`` that process ``index`` of ``count`` reads."""
  return range(n * index // count, n * (index + 1) // count)


def target_width(
    width: int,
    height: int,
    *,
    model_height: int,
    max_width: int,
    resize_mode: str,
    need_frames: int,
) -> int:
  """The width an image of this size gets in training when its label needs ``need_frames``."""
  if resize_mode == "stretch":
    w = max_width
  else:
    w = int(round(width * model_height / height))
    w = min(max(w, preprocess.MIN_WIDTH), max_width)
  return max(w, models.min_width_for_frames(need_frames))


def build_index(
    source: readers.Source,
    *,
    charset: charset_lib.Charset,
    height: int,
    width_buckets: Sequence[int],
    resize_mode: str = "pad",
    unknown_chars: str = "skip",
    process_index: int = 0,
    process_count: int = 1,
    cache: bool | None = None,
    chunk: int = 1024,
    num_threads: int = 8,
) -> Index:
  """Indexes this process's share of ``source`` by width bucket.

  Args:
    source: any ``readers.Source``.
    charset: decides which labels are usable.
    height: the model height.
    width_buckets: increasing bucket widths (multiples of 4). An image goes to the
      narrowest bucket that holds it and gives its label enough frames; a wider image
      is squeezed to the widest bucket.
    resize_mode: 'pad' (keep aspect) or 'stretch' (exactly height x widest bucket).
    unknown_chars: for labels with characters outside the charset: 'skip' (count and
      leave out the example), 'drop' (train on the label without those characters) or
      'error' (raise).
    process_index, process_count: this process indexes ``shard_range`` of the source.
    cache: keep preprocessed images in memory; default: when the share holds at most
      ``CACHE_LIMIT`` examples or the source has no header access (``probe``).
    chunk: examples per read.
    num_threads: threads reading header chunks (file and LMDB reads wait on the disk).

  Returns:
    an ``Index``; empty buckets are kept (``merge_up`` folds them). No usable example
    is not an error here (see ``labels.check_usable``).

  Raises:
    ValueError: for bad options, or an unknown character with ``unknown_chars='error'``.
  """
  buckets, frames = check_buckets(width_buckets, unknown_chars, resize_mode)
  max_width = buckets[-1]
  report = labels_lib.DataReport(source.spec, max_width=max_width, max_frames=frames[-1])
  shard = shard_range(len(source), process_index, process_count)
  can_probe = hasattr(source, "probe") or hasattr(source, "probe_many")
  if cache is None:
    cache = len(shard) <= CACHE_LIMIT or not can_probe
  members = [[] for _ in buckets]
  kept = {} if cache else None

  def add(index: int, text: str, key: str, size: tuple[int, int] | None, image=None):
    report.total += 1
    ids = labels_lib.check_label(text, charset, frames[-1], unknown_chars)
    if isinstance(ids, tuple):
      report.skip(ids[0], f"{key} ({ids[1]})" if ids[0] != "empty_label" else str(key))
      return
    need = labels_lib.required_frames(ids)
    if image is not None:
      try:
        img = preprocess.resize(image, height=height, max_width=max_width, mode=resize_mode)
      except ValueError as e:
        report.skip("empty_image", f"{key} ({e})")
        return
      img = preprocess.fit(img, max_width, need, mode=resize_mode)
      kept[index] = Cached(img, ids, text, str(key))
      width = img.shape[1]
    else:
      width = target_width(
          size[0],
          size[1],
          model_height=height,
          max_width=max_width,
          resize_mode=resize_mode,
          need_frames=need,
      )
    members[next(b for b, bw in enumerate(buckets) if bw >= width)].append(index)
    report.usable += 1

  starts = range(shard.start, shard.stop, chunk)
  read = (
      (lambda s: source.read_many(range(s, min(s + chunk, shard.stop))))
      if cache
      else (lambda s: _probe_chunk(source, range(s, min(s + chunk, shard.stop))))
  )
  threads = max(1, num_threads) if (can_probe and not cache) else 1
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for start, items in zip(starts, pool.map(read, starts)):
      for index, item in enumerate(items, start):
        if isinstance(item, readers.BadExample):
          report.total += 1
          report.skip(item.reason, f"{item.key} ({item.message})")
        elif cache:
          image, text, key = item
          add(index, text, key, None, image)
        else:
          width, img_height, text, key = item
          add(index, text, key, (width, img_height))
  return Index(source, buckets, frames, [np.asarray(m, np.int64) for m in members], report, kept)


def _probe_chunk(source: readers.Source, indices: Sequence[int]) -> list:
  """(width, height, text, key) or ``BadExample`` per index, from headers."""
  if hasattr(source, "probe_many"):
    return source.probe_many(indices)
  out = []
  for i in indices:
    try:
      out.append(source.probe(i))
    except readers.BadExample as e:
      out.append(e)
  return out
