"""Training batches for datasets larger than memory: an index pass, then reads per batch.

``pipeline.prepare`` keeps every preprocessed image in memory, which MJSynth's 9M images
(about 30 GB at 32 x 100) do not allow. Here a start-up pass (``build_index``) reads only
labels and image headers of this process's share (``pipeline.shard_range``, by
``jax.process_index()``), drops what cannot be used (counted by reason in a
``pipeline.DataReport``, exactly as ``prepare`` does) and records which width bucket each
example falls into. ``StreamingBatches`` then reads, decodes and preprocesses the examples
of each batch when it is needed, in grain worker processes ahead of the training step.

Which examples make up the batch of step s is decided as in ``pipeline.TrainBatches`` --
the same seeded shuffle of buckets and rows, the same per-bucket batch counts agreed by all
processes, the same bucket at the same step everywhere -- so it is a pure function of
(seed, step): a run resumed at step s reads exactly what an uninterrupted run would, with
no iterator state to save, and given the same source and settings the batches equal those
of the in-memory path (tested). An image that passes the header check but then fails to
decode (truncated data) is replaced by the next example of the same bucket in the epoch's
order, counted in ``StreamingBatches.read_failures`` and reported through ``log``.

Typical use (what ``train_batches`` does):

    index = build_index(source, charset=..., height=32, width_buckets=(128, 256),
                        process_index=jax.process_index(), process_count=jax.process_count())
    counts = allgather(index.counts()).min(axis=0)       # agreed by every process
    index = index.merge_up(counts, per_host_batch)
    batches = StreamingBatches(source, index, per_host_batch, seed,
                               allgather(index.counts()).min(axis=0), num_workers=2)
    for batch in batches(start_step): ...
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from crnn_jax import charset as charset_lib
from crnn_jax import models
from crnn_jax.data import pipeline, preprocess, readers

# Replacement candidates tried for one unreadable example before giving up on the batch.
_MAX_REPLACEMENTS = 64


@dataclasses.dataclass
class WidthIndex:
  """Which examples of a source (this process's share) fall into which width bucket.

  ``members[b]`` holds source indices, in source order, of the examples whose
  preprocessed width fits ``widths[b]`` (and not a narrower bucket).
  """
  widths: list
  frames: list
  members: list     # of int64 arrays
  report: pipeline.DataReport

  @property
  def buckets(self) -> list:
    """One sized entry per bucket: what ``TrainBatches``-style planning needs."""
    return self.members

  def counts(self) -> np.ndarray:
    return np.array([len(m) for m in self.members], np.int64)

  def __len__(self) -> int:
    return int(self.counts().sum())

  def merge_up(self, counts: Sequence[int], threshold: int) -> "WidthIndex":
    """Moves the members of buckets with fewer than ``threshold`` examples to the next wider one.

    The same rule, and the same order of examples, as ``pipeline.merge_buckets_up``.

    Args:
      counts: per-bucket counts the decision is based on (the smallest over processes).
      threshold: e.g. the per-process batch size.
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
    return WidthIndex(widths, frames, members, self.report)


def _probe_chunk(source: readers.Source, indices: Sequence[int]) -> list:
  """(width, height, text, key) or ``BadExample`` per index, as cheaply as the source allows."""
  if hasattr(source, "probe_many"):
    return source.probe_many(indices)
  if hasattr(source, "probe"):
    out = []
    for i in indices:
      try:
        out.append(source.probe(i))
      except readers.BadExample as e:
        out.append(e)
    return out
  out = []  # no header access (e.g. rendered data): read the images
  for item in source.read_many(indices):
    if isinstance(item, readers.BadExample):
      out.append(item)
      continue
    image, text, key = item
    try:
      gray = preprocess.to_pil_gray(image)
    except ValueError as e:
      out.append(readers.BadExample("empty_image", key, str(e)))
      continue
    out.append((gray.width, gray.height, text, key))
  return out


def target_width(width: int, height: int, *, model_height: int, max_width: int,
                 resize_mode: str, need_frames: int) -> int:
  """The width ``prepare`` gives an image of this size whose label needs ``need_frames``."""
  if resize_mode == "stretch":
    w = max_width
  else:
    w = int(round(width * model_height / height))
    w = min(max(w, preprocess.MIN_WIDTH), max_width)
  return max(w, models.min_width_for_frames(need_frames))


def build_index(source: readers.Source, *, charset: charset_lib.Charset, height: int,
                width_buckets: Sequence[int], resize_mode: str = "pad",
                unknown_chars: str = "skip", process_index: int = 0, process_count: int = 1,
                chunk: int = 1024, num_threads: int = 8) -> WidthIndex:
  """Buckets this process's share of ``source`` from labels and image headers alone.

  Args:
    source: any ``readers.Source``; those with ``probe``/``probe_many`` (``formats``) are
      read header-only, others are decoded.
    charset, height, width_buckets, resize_mode, unknown_chars: as ``pipeline.prepare``.
    process_index, process_count: this process indexes ``pipeline.shard_range`` of the source.
    chunk: examples per read.
    num_threads: threads reading chunks (file and LMDB reads wait on the disk).

  Returns:
    ``WidthIndex`` whose report counts what was skipped, by reason, with example keys.

  Raises:
    ValueError: for bad buckets, or an unknown character with ``unknown_chars='error'``.
  """
  buckets, frames = pipeline.check_buckets(width_buckets, unknown_chars)
  if resize_mode not in preprocess.RESIZE_MODES:
    raise ValueError(f"resize mode {resize_mode!r} is not one of {preprocess.RESIZE_MODES}.")
  max_width = buckets[-1]
  report = pipeline.DataReport(source.spec, max_width=max_width, max_frames=frames[-1])
  members = [[] for _ in buckets]
  shard = pipeline.shard_range(len(source), process_index, process_count)
  starts = range(shard.start, shard.stop, chunk)
  if not (hasattr(source, "probe") or hasattr(source, "probe_many")):
    num_threads = 1  # decoding sources (rendered data) bring their own workers
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    results = pool.map(lambda s: (s, _probe_chunk(source, range(s, min(s + chunk, shard.stop)))),
                       starts)
    for start, items in results:
      for index, item in enumerate(items, start):
        report.total += 1
        if isinstance(item, readers.BadExample):
          report.skip(item.reason, f"{item.key} ({item.message})")
          continue
        width, img_height, text, key = item
        if not text:
          report.skip("empty_label", key)
          continue
        missing = charset.unknown_chars(text)
        if missing:
          if unknown_chars == "error":
            charset.encode(text)  # raises, naming the character and the text
          report.skip("unknown_chars", f"{key} {text!r} has {missing!r}")
          continue
        need = pipeline._required_frames(charset.encode(text))
        if need > frames[-1]:
          report.skip("label_too_long", f"{key} ({len(text)} chars need {need} frames)")
          continue
        w = target_width(width, img_height, model_height=height, max_width=max_width,
                         resize_mode=resize_mode, need_frames=need)
        members[next(b for b, bw in enumerate(buckets) if bw >= w)].append(index)
        report.usable += 1
  return WidthIndex(buckets, frames, [np.asarray(m, np.int64) for m in members], report)


class StreamingBatches:
  """Training batches read on demand; a pure function of (seed, step) like ``TrainBatches``.

  Args:
    source: the source ``index`` was built from (picklable: it travels to the workers).
    index: from ``build_index``, after ``WidthIndex.merge_up``.
    batch_size: rows per process per step.
    seed: shuffling seed.
    counts: per-bucket example counts agreed by all processes.
    charset, height, resize_mode: as given to ``build_index``.
    num_workers: grain worker processes preparing batches ahead of the step; 0 reads in
      this process with ``num_threads`` threads.
    num_threads: threads per process preparing batches.
    prefetch: batches buffered per worker (or in this process).
    log: called with a line whenever unreadable examples were replaced.

  Raises:
    ValueError: if the agreed counts cannot fill one batch.
  """

  def __init__(self, source: readers.Source, index: WidthIndex, batch_size: int, seed: int,
               counts: Sequence[int], *, charset: charset_lib.Charset, height: int,
               resize_mode: str = "pad", num_workers: int = 0, num_threads: int = 2,
               prefetch: int = 4, log: Callable[[str], None] | None = None):
    self.source = source
    self.index = index
    self.batch_size = batch_size
    self.seed = seed
    self.charset = charset
    self.height = height
    self.resize_mode = resize_mode
    self.num_workers = num_workers
    self.num_threads = num_threads
    self.prefetch = prefetch
    self.log = log
    # The same plan as the in-memory path, so both give the same batches.
    self.plan = pipeline.BatchPlan([len(m) for m in index.members], batch_size, seed, counts,
                                   index.report.spec)
    self.steps_per_epoch = self.plan.steps_per_epoch
    # Examples that failed to decode after passing the index: counted here, by reason.
    self.read_failures = pipeline.DataReport(index.report.spec)

  def __getstate__(self):
    state = dict(self.__dict__)
    state["log"] = None  # stays with the training process
    return state

  def rows(self, step: int) -> tuple[int, int, np.ndarray]:
    """(bucket, batch number within the bucket, source indices) of global step ``step``."""
    b, j, order = self.plan.locate(step)
    rows = order[j * self.batch_size:(j + 1) * self.batch_size]
    return b, j, self.index.members[b][rows]

  def _load(self, item, width: int, frames: int):
    """(image (H, w) uint8, label ids) of one read item, or a ``BadExample``."""
    if isinstance(item, readers.BadExample):
      return item
    image, text, key = item
    missing = self.charset.unknown_chars(text) if text else "empty"
    if missing:  # the index saw another label: the data changed underneath
      return readers.BadExample("unknown_chars", key, f"{text!r} has {missing!r}")
    ids = self.charset.encode(text)
    try:
      img = preprocess.resize(image, height=self.height, max_width=self.index.widths[-1],
                              mode=self.resize_mode)
    except ValueError as e:
      return readers.BadExample("empty_image", key, str(e))
    need = pipeline._required_frames(ids)
    if need > frames:  # only if the data changed since the index pass
      return readers.BadExample("label_too_long", key, f"{len(ids)} chars need {need} frames")
    img = preprocess.widen(img, models.min_width_for_frames(need))
    if img.shape[1] > width:
      # Wider than its header said (an EXIF rotation): squeeze into the planned bucket.
      img = np.asarray(Image.fromarray(img, "L").resize((width, self.height), Image.BILINEAR))
    return img, ids

  def _batch_with_failures(self, step: int) -> tuple[dict, list]:
    b, j, indices = self.rows(step)
    width, frames = self.index.widths[b], self.index.frames[b]
    images = np.zeros((self.batch_size, self.height, width), np.uint8)
    widths = np.zeros((self.batch_size,), np.int32)
    labels = np.zeros((self.batch_size, frames), np.int32)
    lengths = np.zeros((self.batch_size,), np.int32)
    failures = []
    members, perm = self.index.members[b], self.plan.locate(step)[2]
    spare = (j + 1) * self.batch_size  # replacements: the rows after this batch's
    loaded = [self._load(item, width, frames)
              for item in self.source.read_many([int(i) for i in indices])]
    for r, example in enumerate(loaded):
      tries = 0
      while isinstance(example, readers.BadExample):
        failures.append((example.reason, f"{example.key} ({example.message})"))
        tries += 1
        if tries > _MAX_REPLACEMENTS:
          raise RuntimeError(f"Dataset {self.index.report.spec}: {tries} examples in a row "
                             f"failed to read at step {step}: " + "; ".join(
                                 m for _, m in failures[-3:]))
        # Deterministic replacement: the next examples of this bucket in the epoch's order.
        candidate = int(members[perm[spare % len(perm)]])
        spare += 1
        example = self._load(self.source.read_many([candidate])[0], width, frames)
      img, ids = example
      images[r, :, :img.shape[1]] = img
      widths[r] = img.shape[1]
      labels[r, :len(ids)] = ids
      lengths[r] = len(ids)
    batch = {
        "images": images,
        "widths": widths,
        "labels": labels,
        "label_paddings": (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32),
    }
    return batch, failures

  def _element(self, step: int) -> tuple[dict, list]:
    return self._batch_with_failures(int(step))

  def _note(self, step: int, failures: list):
    for reason, message in failures:
      self.read_failures.skip(reason, message)
    self.read_failures.total += len(failures)
    if failures and self.log is not None:
      self.log(f"train data: {len(failures)} example(s) unreadable at step {step}, replaced "
               f"by the next of their bucket: " + "; ".join(m for _, m in failures[:3]))

  def batch(self, step: int) -> dict:
    """The host batch of global step ``step`` (read in this process)."""
    batch, failures = self._batch_with_failures(step)
    self._note(step, failures)
    return batch

  def __call__(self, start_step: int = 0) -> Iterator[dict]:
    """Batches of steps ``start_step``, ``start_step + 1``, ... prepared ahead by grain."""
    import grain

    dataset = grain.MapDataset.range(start_step, start_step + 2**40).map(self._element)
    if self.num_workers > 0:
      _mark_flags_parsed()
      iterator = dataset.to_iter_dataset(
          grain.ReadOptions(num_threads=max(1, self.num_threads),
                            prefetch_buffer_size=self.prefetch)).mp_prefetch(
              grain.MultiprocessingOptions(num_workers=self.num_workers,
                                           per_worker_buffer_size=self.prefetch))
    else:
      iterator = dataset.to_iter_dataset(
          grain.ReadOptions(num_threads=max(1, self.num_threads),
                            prefetch_buffer_size=self.prefetch))
    iterator = iter(iterator)
    try:
      for step in range(start_step, start_step + 2**40):
        batch, failures = next(iterator)
        self._note(step, failures)
        yield batch
    finally:
      close = getattr(iterator, "close", None)
      if close is not None:
        close()


def _mark_flags_parsed():
  # grain's worker processes read absl flags; a library caller (a test, a notebook) may not
  # have parsed any. scripts/train.py has, and is left alone.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def train_batches(config, charset: charset_lib.Charset, *,
                  log: Callable[[str], None] = print) -> StreamingBatches:
  """The streaming counterpart of train.py's in-memory data set-up, for ``config.data.train``.

  Opens the source, indexes this process's share, agrees bucket counts with every process
  (``sharding.allgather``), merges small buckets up, and logs what it found -- the same
  report and the same "no usable example" error as the in-memory path.

  Raises:
    ValueError: when no example is usable, saying what was found.
  """
  import time

  import jax

  from crnn_jax import sharding

  t0 = time.time()
  spec = config.data.train
  source = readers.open_source(spec, height=config.model.height,
                               charset=charset.chars if spec.startswith("synth:") else None)
  index = build_index(source, charset=charset, height=config.model.height,
                      width_buckets=config.data.width_buckets,
                      resize_mode=config.data.resize_mode,
                      unknown_chars=config.data.unknown_chars,
                      process_index=jax.process_index(), process_count=jax.process_count())
  usable = int(sharding.allgather(index.report.usable).sum())
  total = int(sharding.allgather(index.report.total).sum())
  log(f"train data (streaming, indexed from headers): {index.report.describe()}"
      + (f" [this process; {usable} of {total} over all]" if jax.process_count() > 1 else "")
      + f" ({time.time() - t0:.1f}s)")
  pipeline.check_usable(index.report, usable)
  per_host = config.train.batch_size // jax.process_count()
  counts = sharding.allgather(index.counts()).min(axis=0)
  index = index.merge_up(counts, per_host)
  counts = sharding.allgather(index.counts()).min(axis=0)
  num_workers = int(config.data.get("num_workers", 2))
  batches = StreamingBatches(source, index, per_host, config.train.seed, counts,
                             charset=charset, height=config.model.height,
                             resize_mode=config.data.resize_mode, num_workers=num_workers,
                             log=log)
  log("train buckets (width: examples): "
      + ", ".join(f"{w}: {len(m)}" for w, m in zip(index.widths, index.members))
      + f"; {batches.steps_per_epoch} steps per epoch; {num_workers} reader process(es)")
  return batches


def skipped_summary(report: pipeline.DataReport) -> str:
  """'N unreadable (reason: count, ...)' for a ``read_failures`` report, or ''."""
  if not report.skipped:
    return ""
  parts = ", ".join(f"{r}: {n}" for r, n in collections.Counter(report.skipped).most_common())
  return f"{sum(report.skipped.values())} examples replaced at read time ({parts})"
