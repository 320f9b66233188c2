"""From a source to fixed-shape batches: preprocess, check, bucket, batch.

``prepare`` reads this process's share of a source once, preprocesses every
image to the model height, drops unusable examples (counted by reason, with
example keys, in a ``DataReport``) and groups the rest into width buckets.

``TrainBatches`` turns that into a stream of batches that is a pure function of
(seed, step): resuming at step s yields exactly the batches an uninterrupted run
would, and every process picks the same bucket at the same step so the global
batch has one shape. ``eval_batches`` covers every example once, padding the last
batch of each bucket and marking filler rows with ``mask = 0``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from crnn_jax import charset as charset_lib
from crnn_jax import models
from crnn_jax.data import preprocess, readers

# Human-readable text of each skip reason, used in reports and errors.
REASONS = {
    "missing_file": "image files missing",
    "corrupt_image": "images unreadable or truncated",
    "empty_image": "zero-size images",
    "malformed_line": "label lines without a TAB",
    "empty_label": "empty labels",
    "unknown_chars": "labels with characters outside the charset",
    "label_too_long": "labels too long for the widest bucket",
    "malformed_name": "file names without a word (INDEX_WORD_LEXICON.jpg)",
    "bad_label": "labels that are not UTF-8 text",
}


@dataclasses.dataclass
class DataReport:
  """What ``prepare`` kept and skipped."""
  spec: str
  total: int = 0
  usable: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  samples: dict = dataclasses.field(default_factory=dict)  # reason -> [message, ...]
  max_width: int = 0
  max_frames: int = 0

  def skip(self, reason: str, message: str, keep: int = 3):
    self.skipped[reason] += 1
    self.samples.setdefault(reason, [])
    if len(self.samples[reason]) < keep:
      self.samples[reason].append(message)

  def describe(self) -> str:
    """One line per skip reason, with up to three examples each."""
    head = f"{self.spec}: {self.usable} of {self.total} examples usable"
    if not self.skipped:
      return head + "."
    lines = [head + ", skipped:"]
    for reason, n in self.skipped.most_common():
      what = REASONS.get(reason, reason)
      if reason == "label_too_long":
        what = (f"labels need more than {self.max_frames} frames (width {self.max_width}); "
                f"add a wider data.width_buckets entry")
      lines.append(f"  {n:>7}  {what}: e.g. " + "; ".join(self.samples.get(reason, [])))
    return "\n".join(lines)

  def merge(self, other: "DataReport") -> "DataReport":
    out = DataReport(self.spec, self.total + other.total, self.usable + other.usable,
                     self.skipped + other.skipped, dict(self.samples),
                     self.max_width, self.max_frames)
    for k, v in other.samples.items():
      out.samples.setdefault(k, [])
      out.samples[k] = (out.samples[k] + v)[:3]
    return out


@dataclasses.dataclass
class Bucket:
  """Examples padded to one width. ``labels`` are padded with 0 to ``frames`` columns."""
  width: int
  images: np.ndarray        # (n, H, width) uint8
  widths: np.ndarray        # (n,) int32, valid pixel width
  labels: np.ndarray        # (n, frames) int32
  label_lengths: np.ndarray  # (n,) int32
  texts: list
  keys: list

  def __len__(self) -> int:
    return len(self.widths)

  @property
  def frames(self) -> int:
    return self.labels.shape[1]


@dataclasses.dataclass
class Prepared:
  buckets: list   # of Bucket, by increasing width; may be empty of examples
  report: DataReport

  def __len__(self) -> int:
    return sum(len(b) for b in self.buckets)


def shard_range(n: int, index: int, count: int) -> range:
  """The contiguous share of ``range(n)`` that process ``index`` of ``count`` reads."""
  return range(n * index // count, n * (index + 1) // count)


def prepare(source: readers.Source, *, charset: charset_lib.Charset, height: int,
            width_buckets: Sequence[int], resize_mode: str = "pad",
            unknown_chars: str = "skip", process_index: int = 0,
            process_count: int = 1, chunk: int = 2048) -> Prepared:
  """Reads and preprocesses this process's share of ``source``.

  Args:
    source: from ``readers.open_source``.
    charset: maps labels to ids; decides which labels are usable.
    height: model height; every image is resized to it.
    width_buckets: increasing bucket widths (multiples of 4). An image goes to
      the narrowest bucket that holds it and gives its label enough frames; a
      wider image is squeezed to the widest bucket.
    resize_mode: 'pad' (keep aspect) or 'stretch' (exactly height x widest bucket).
    unknown_chars: 'skip' (count and drop) or 'error' (raise) for labels with
      characters outside the charset.
    process_index, process_count: this process reads ``shard_range`` of the source.

  Returns:
    ``Prepared`` with this process's buckets and a report of what was skipped.
    An empty result is not an error here (see ``check_usable``).

  Raises:
    ValueError: for bad buckets, or an unknown character with ``unknown_chars='error'``.
  """
  buckets, frames = check_buckets(width_buckets, unknown_chars)
  max_width = buckets[-1]
  report = DataReport(source.spec, max_width=max_width, max_frames=frames[-1])
  per_bucket = [[] for _ in buckets]  # (image, width, ids, text, key)
  indices = shard_range(len(source), process_index, process_count)
  for start in range(indices.start, indices.stop, chunk):
    for item in source.read_many(range(start, min(start + chunk, indices.stop))):
      report.total += 1
      if isinstance(item, readers.BadExample):
        report.skip(item.reason, f"{item.key} ({item.message})")
        continue
      image, text, key = item
      if not text:
        report.skip("empty_label", key)
        continue
      missing = charset.unknown_chars(text)
      if missing:
        if unknown_chars == "error":
          charset.encode(text)  # raises, naming the character and the text
        report.skip("unknown_chars", f"{key} {text!r} has {missing!r}")
        continue
      ids = charset.encode(text)
      need = int(np.asarray(_required_frames(ids)))
      if need > frames[-1]:
        report.skip("label_too_long", f"{key} ({len(ids)} chars need {need} frames)")
        continue
      try:
        img = preprocess.resize(image, height=height, max_width=max_width, mode=resize_mode)
      except ValueError as e:
        report.skip("empty_image", f"{key} ({e})")
        continue
      # A label may need more frames than its image gives: widen the image to fit.
      img = preprocess.widen(img, models.min_width_for_frames(need))
      b = next(i for i, w in enumerate(buckets) if w >= img.shape[1])
      per_bucket[b].append((img, img.shape[1], ids, text, key))
      report.usable += 1
  return Prepared([_make_bucket(w, f, height, items)
                   for w, f, items in zip(buckets, frames, per_bucket)], report)


def check_buckets(width_buckets: Sequence[int], unknown_chars: str) -> tuple[list, list]:
  """The sorted width buckets and their frame counts, after checking the data options.

  Raises:
    ValueError: naming the option, for unusable widths or an unknown ``unknown_chars``.
  """
  buckets = sorted(set(int(w) for w in width_buckets))
  if not buckets or any(w % models.WIDTH_STRIDE or w < preprocess.MIN_WIDTH for w in buckets):
    raise ValueError(f"data.width_buckets must be multiples of {models.WIDTH_STRIDE}, at least "
                     f"{preprocess.MIN_WIDTH}; got {tuple(width_buckets)}.")
  if unknown_chars not in ("skip", "error"):
    raise ValueError(f"unknown_chars must be 'skip' or 'error'; got {unknown_chars!r}.")
  return buckets, [int(models.num_frames(w)) for w in buckets]


def _required_frames(ids: Sequence[int]) -> int:
  return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def _make_bucket(width: int, frames: int, height: int, items: list) -> Bucket:
  n = len(items)
  images = np.zeros((n, height, width), np.uint8)
  widths = np.zeros((n,), np.int32)
  labels = np.zeros((n, frames), np.int32)
  lengths = np.zeros((n,), np.int32)
  for i, (img, w, ids, _, _) in enumerate(items):
    images[i, :, :w] = img
    widths[i] = w
    labels[i, :len(ids)] = ids
    lengths[i] = len(ids)
  return Bucket(width, images, widths, labels, lengths,
                [it[3] for it in items], [it[4] for it in items])


def check_usable(report: DataReport, usable_global: int | None = None):
  """Raises ValueError saying what was found when no example is usable."""
  usable = report.usable if usable_global is None else usable_global
  if usable == 0:
    raise ValueError(f"Dataset {report.describe()}\nNothing to train or evaluate on: "
                     f"fix the data or the settings named above.")


def merge_buckets_up(prep: Prepared, counts: Sequence[int], threshold: int) -> Prepared:
  """Moves the examples of buckets holding fewer than ``threshold`` into the next wider one.

  Args:
    prep: from ``prepare``.
    counts: per-bucket counts the decision is based on; pass the smallest count
      over all processes so every process merges the same buckets.
    threshold: e.g. the per-process batch size, so every kept bucket fills a batch.

  Returns:
    ``Prepared`` whose buckets (but possibly the widest) each hold ``threshold``
    examples on every process. The widest bucket keeps whatever reaches it.
  """
  out, carry, carried = [], None, 0
  for i, b in enumerate(prep.buckets):
    count = counts[i] + carried
    if carry is not None:
      b = _concat(_repad(carry, b.width, b.frames), b)
    if i + 1 < len(prep.buckets) and count < threshold:
      carry, carried = b, count
      continue
    carry, carried = None, 0
    out.append(b)
  return Prepared(out, prep.report)


def bucket_counts(prep: Prepared) -> np.ndarray:
  return np.array([len(b) for b in prep.buckets], np.int64)


def _take(b: Bucket, rows: np.ndarray) -> dict:
  """Host batch of the given rows: uint8 images, widths, labels and label paddings."""
  lengths = b.label_lengths[rows]
  return {
      "images": b.images[rows],
      "widths": b.widths[rows],
      "labels": b.labels[rows],
      "label_paddings": (np.arange(b.frames)[None, :] >= lengths[:, None]).astype(np.float32),
  }


class BatchPlan:
  """Which rows of which width bucket every global step reads, as a pure function of
  (seed, step). The in-memory and streaming training paths share it, so they produce the
  same batches.

  Each epoch shuffles every bucket and the order of (bucket, batch) pairs, drops each
  bucket's remainder, and never mixes widths within a batch. The number of batches per
  bucket comes from ``counts`` (the smallest over processes), so all processes agree on
  the bucket of every step.

  Args:
    bucket_sizes: examples per bucket in this process.
    batch_size: rows per process per step.
    seed: shuffling seed.
    counts: per-bucket example counts agreed by all processes.
    spec: the dataset, for the error message.
  """

  def __init__(self, bucket_sizes: Sequence[int], batch_size: int, seed: int,
               counts: Sequence[int], spec: str):
    self.bucket_sizes = [int(n) for n in bucket_sizes]
    self.batch_size = batch_size
    self.seed = seed
    self.batches_per_bucket = [int(c) // batch_size for c in counts]
    self.steps_per_epoch = sum(self.batches_per_bucket)
    if self.steps_per_epoch == 0:
      raise ValueError(
          f"Dataset {spec}: {int(sum(counts))} usable examples (per process) cannot fill "
          f"one batch of {batch_size} per process; use a smaller train.batch_size or more "
          f"data.")
    self._epoch = -1

  def __getstate__(self):
    # The per-epoch draws are a cache: a copy in a worker process redraws them.
    state = dict(self.__dict__, _epoch=-1)
    state.pop("_order", None)
    state.pop("_perms", None)
    return state

  def locate(self, step: int) -> tuple[int, int, np.ndarray]:
    """(bucket, batch number within the bucket, the bucket's shuffled order) of ``step``.

    The batch's rows of the bucket are ``order[j * batch_size:(j + 1) * batch_size]``;
    the rows after them are this epoch's later batches (or its dropped remainder).
    """
    epoch, k = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, epoch])
      order = [(b, j) for b, n in enumerate(self.batches_per_bucket) for j in range(n)]
      self._order = [order[k] for k in rng.permutation(len(order))]
      self._perms = [rng.permutation(n) for n in self.bucket_sizes]
      self._epoch = epoch
    b, j = self._order[k]
    return b, j, self._perms[b]


class TrainBatches:
  """Training batches of prepared (in-memory) data, as a pure function of (seed, step).

  Args:
    prep: this process's prepared data, after ``merge_buckets_up``.
    batch_size: rows per process per step.
    seed: shuffling seed.
    counts: per-bucket example counts agreed by all processes (see ``BatchPlan``).
  """

  def __init__(self, prep: Prepared, batch_size: int, seed: int, counts: Sequence[int]):
    self.prep = prep
    self.plan = BatchPlan([len(b) for b in prep.buckets], batch_size, seed, counts,
                          prep.report.spec)
    self.batch_size = batch_size
    self.steps_per_epoch = self.plan.steps_per_epoch

  def batch(self, step: int) -> dict:
    """The host batch of global step ``step``."""
    b, j, order = self.plan.locate(step)
    rows = order[j * self.batch_size:(j + 1) * self.batch_size]
    return _take(self.prep.buckets[b], rows)

  def __call__(self, start_step: int) -> Iterator[dict]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


def eval_batches(prep: Prepared, batch_size: int,
                 batches_per_bucket: Sequence[int] | None = None) -> Iterator[tuple[dict, list, list]]:
  """Every example once: yields ``(batch, texts, keys)``; filler rows have ``mask`` 0.

  Args:
    prep: prepared evaluation data.
    batch_size: rows per process per batch.
    batches_per_bucket: batches to yield per bucket (the largest over processes,
      so all processes run the same number of steps); default: just enough.
  """
  for i, b in enumerate(prep.buckets):
    need = -(-len(b) // batch_size)
    total = need if batches_per_bucket is None else int(batches_per_bucket[i])
    for j in range(total):
      rows = np.arange(j * batch_size, (j + 1) * batch_size)
      valid = rows < len(b)
      batch = _take(b, np.where(valid, rows, 0)) if len(b) else _empty(b, batch_size)
      batch["mask"] = valid.astype(np.float32)
      if len(b):
        batch["images"][~valid] = 0
        batch["widths"][~valid] = 0
      texts = [b.texts[r] for r in rows[valid]]
      keys = [b.keys[r] for r in rows[valid]]
      yield batch, texts, keys


def _empty(b: Bucket, batch_size: int) -> dict:
  return {
      "images": np.zeros((batch_size,) + b.images.shape[1:], np.uint8),
      "widths": np.zeros((batch_size,), np.int32),
      "labels": np.zeros((batch_size, b.frames), np.int32),
      "label_paddings": np.ones((batch_size, b.frames), np.float32),
  }


def _repad(b: Bucket, width: int, frames: int) -> Bucket:
  images = np.zeros((len(b), b.images.shape[1], width), np.uint8)
  images[:, :, :b.width] = b.images
  labels = np.zeros((len(b), frames), np.int32)
  labels[:, :b.frames] = b.labels
  return Bucket(width, images, b.widths, labels, b.label_lengths, b.texts, b.keys)


def _concat(a: Bucket, b: Bucket) -> Bucket:
  return Bucket(b.width, np.concatenate([a.images, b.images]),
                np.concatenate([a.widths, b.widths]), np.concatenate([a.labels, b.labels]),
                np.concatenate([a.label_lengths, b.label_lengths]), a.texts + b.texts,
                a.keys + b.keys)
