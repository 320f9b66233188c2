"""Training host batches: the plan's slots read, augmented, fitted and assembled.

For every step the ``TrainLoader`` asks the batch plan which example fills which row,
gets each example from its member (the in-memory cache of an indexed source, a read of a
large source, or the renderer for ``synth:``), augments it (optional, seeded by
(seed, step, process, row)), fits it into the step's width bucket and assembles the
batch with ``batching.assemble``. A batch is therefore a pure function of the seed and
the step, whichever process or worker computes it, and a resumed run reads what an
uninterrupted one would.

``loader(start_step)`` yields the batches of ``start_step, start_step + 1, ...``,
prepared ahead in grain worker processes when ``num_workers > 0``: rendering and decoding
run there, beside the training step. An example that fails to read or cannot be used
(a truncated file, a rendered word too long for the step's bucket) is replaced by another
of the same member, deterministically, and counted in ``read_failures``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from crnn_jax import charset as charset_lib
from crnn_jax.data import augment as augment_lib
from crnn_jax.data import batching
from crnn_jax.data import index as index_lib
from crnn_jax.data import labels as labels_lib
from crnn_jax.data import plan as plan_lib
from crnn_jax.data import preprocess, readers, workers

# Replacement candidates tried for one row before giving up on the batch.
_MAX_REPLACEMENTS = 64


# Words of a rendered stream looked at (by their text alone) to find one for a step's bucket.
_MAX_TEXT_TRIES = 64


@dataclasses.dataclass
class Feed:
  """One member of the training mixture: a source, indexed (with its ``Index``) or rendered.

  ``bucket_of_length`` (rendered sources): (max length + 1, buckets), the probability that
  a word of each text length lands in each width bucket; rows of a step of bucket b take
  words accepted with that probability.
  """

  source: readers.Source
  index: index_lib.Index | None = None
  bucket_of_length: np.ndarray | None = None


class TrainLoader:
  """Training batches as a pure function of (seed, step).

  Args:
    feeds: the mixture's members, in the plan's member order.
    plan: an ``EpochPlan`` (one indexed feed) or a ``SamplingPlan``.
    widths, frames: the width buckets the plan's bucket numbers refer to, and their frames.
    batch_size: rows per process per step.
    charset: for labels of rendered and read-per-batch examples.
    height: the model height.
    resize_mode: 'pad' or 'stretch'.
    unknown_chars: 'skip', 'drop' or 'error', as ``labels.check_label`` takes it.
    augment: augmentation strength in [0, 1]; 0 is off.
    seed: the data seed (augmentation draws are seeded by it, the step and the row).
    process_index: this process (augmentation differs per process).
    num_workers: grain worker processes preparing batches ahead; 0 reads in this process.
    num_threads: threads per process preparing batches.
    prefetch: batches buffered per worker (or in this process).
    log: called with a line whenever examples had to be replaced.
  """

  def __init__(
      self,
      feeds: Sequence[Feed],
      plan,
      *,
      widths: Sequence[int],
      frames: Sequence[int],
      batch_size: int,
      charset: charset_lib.Charset,
      height: int,
      resize_mode: str = "pad",
      unknown_chars: str = "skip",
      augment: float = 0.0,
      seed: int = 0,
      process_index: int = 0,
      num_workers: int = 0,
      num_threads: int = 1,
      prefetch: int = 4,
      log: Callable[[str], None] | None = None,
  ):
    self.feeds = list(feeds)
    self.plan = plan
    self.widths = list(widths)
    self.frames = list(frames)
    self.batch_size = batch_size
    self.charset = charset
    self.height = height
    self.resize_mode = resize_mode
    self.unknown_chars = unknown_chars
    self.augment = float(augment)
    self.seed = seed
    self.process_index = process_index
    self.num_workers = num_workers
    self.num_threads = num_threads
    self.prefetch = prefetch
    self.log = log
    self.read_failures = labels_lib.DataReport("train data")

  def __getstate__(self):
    return dict(self.__dict__, log=None)  # the log stays with the training process

  def member_counts(self, step: int) -> np.ndarray:
    """Rows each member fills at ``step`` (cheap: the plan alone)."""
    return np.bincount(self.plan.slots(step).members, minlength=len(self.feeds))

  def _example(self, member: int, bucket: int, ref: int, raw=None):
    """(image (H, w) uint8 at the model height, ids) of one row, or a ``BadExample``."""
    feed = self.feeds[member]
    frames = self.frames[bucket]
    if feed.index is not None:
      i = int(feed.index.members[bucket][ref])
      if feed.index.cache is not None:
        c = feed.index.cache[i]
        return c.image, c.ids
    else:
      i = ref
    item = raw if raw is not None else feed.source.read_many([i])[0]
    if isinstance(item, readers.BadExample):
      return item
    image, text, key = item
    ids = labels_lib.check_label(text, self.charset, frames, self.unknown_chars)
    if isinstance(ids, tuple):
      return readers.BadExample(ids[0], str(key), ids[1])
    try:
      img = preprocess.resize(
          image, height=self.height, max_width=self.widths[-1], mode=self.resize_mode
      )
    except ValueError as e:
      return readers.BadExample("empty_image", str(key), str(e))
    return img, ids

  def _pick_rendered(self, step: int, slot: int, member: int, bucket: int, ref: int) -> int:
    """The first word, of ``ref`` and the row's replacements, accepted for ``bucket``.

    Each candidate is accepted with the probability that a word of its length lands in
    ``bucket`` (only its text is drawn, not its image): the accepted words are distributed
    like those that land in the bucket naturally.
    """
    feed = self.feeds[member]
    table = feed.bucket_of_length
    if table is None or len(self.widths) == 1:
      return ref
    coins = np.random.default_rng([self.seed, step, self.process_index, slot, 2]).random(
        _MAX_TEXT_TRIES
    )
    for attempt in range(_MAX_TEXT_TRIES):
      # Draws of their own, apart from the replacements of unusable examples.
      candidate = (
          ref
          if attempt == 0
          else self.plan.replacement(step, slot, _MAX_REPLACEMENTS + attempt, member, bucket)
      )
      length = min(len(feed.source.text(candidate)), len(table) - 1)
      if coins[attempt] < table[length, bucket]:
        return candidate
    return ref  # none accepted: the word is squeezed or padded into the bucket

  def _prefetch_reads(self, slots: plan_lib.Slots, step: int) -> dict:
    """Reads the rows that need a source read, one ``read_many`` per member (in index order)."""
    raw = {}
    for m, feed in enumerate(self.feeds):
      if feed.index is not None and feed.index.cache is not None:
        continue
      rows = np.flatnonzero(slots.members == m)
      if not len(rows):
        continue
      refs = slots.refs[rows]
      if feed.index is not None:
        refs = feed.index.members[slots.bucket][refs]
      else:
        refs = [
            self._pick_rendered(step, int(r), m, slots.bucket, int(ref))
            for r, ref in zip(rows, refs)
        ]
        slots.refs[rows] = refs
      for r, item in zip(rows, feed.source.read_many([int(i) for i in refs])):
        raw[int(r)] = item
    return raw

  def batch_with_failures(self, step: int) -> tuple[dict, list]:
    """The host batch of ``step`` and the (reason, message) of every replaced example."""
    step = int(step)
    slots = self.plan.slots(step)
    b = slots.bucket
    width, frames = self.widths[b], self.frames[b]
    raw = self._prefetch_reads(slots, step)
    images, ids, failures = [], [], []
    for r, (m, ref) in enumerate(zip(slots.members, slots.refs)):
      m = int(m)
      example = self._example(m, b, int(ref), raw.get(r))
      attempt = 0
      while isinstance(example, readers.BadExample):
        failures.append((example.reason, f"{example.key} ({example.message})"))
        attempt += 1
        if attempt > _MAX_REPLACEMENTS:
          raise RuntimeError(
              f"train data: {attempt} examples in a row could not be used at "
              f"step {step}: " + "; ".join(m for _, m in failures[-3:])
          )
        example = self._example(m, b, self.plan.replacement(step, r, attempt, m, b))
      img, label = example
      if self.augment > 0:
        rng = np.random.default_rng([self.seed, step, self.process_index, r, 1])
        img = augment_lib.augment(img, rng, self.augment)
      images.append(
          preprocess.fit(img, width, labels_lib.required_frames(label), mode=self.resize_mode)
      )
      ids.append(label)
    return batching.assemble(images, width, self.batch_size, labels=ids, frames=frames), failures

  def _note(self, step: int, failures: list):
    for reason, message in failures:
      self.read_failures.skip(reason, message)
    self.read_failures.total += len(failures)
    if failures and self.log is not None:
      self.log(
          f"train data: {len(failures)} example(s) unusable at step {step}, replaced "
          f"by others of their source: " + "; ".join(m for _, m in failures[:3])
      )

  def batch(self, step: int) -> dict:
    """The host batch of global step ``step``, computed in this process."""
    batch, failures = self.batch_with_failures(step)
    self._note(step, failures)
    return batch

  def __call__(self, start_step: int = 0) -> Iterator[dict]:
    """Batches of steps ``start_step``, ``start_step + 1``, ... prepared ahead by grain."""
    import grain

    dataset = grain.MapDataset.range(start_step, start_step + 2**40).map(self.batch_with_failures)
    options = grain.ReadOptions(
        num_threads=max(1, self.num_threads), prefetch_buffer_size=self.prefetch
    )
    iterator = dataset.to_iter_dataset(options)
    if self.num_workers > 0:
      iterator = workers.prefetch(iterator, num_workers=self.num_workers, buffer=self.prefetch)
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
