"""The batch plan: which example fills which slot of which batch, as a pure function of
(seed, step).

Nothing about the data position is saved in a checkpoint: a run resumed at step s asks
the plan for step s and reads exactly what an uninterrupted run would. Every process
asks with its own ``process_index`` and gets its own rows, but the width bucket of a step
is drawn from the seed and the step alone, so all processes feed the same global shape.

Two plans, one interface (``slots(step) -> Slots``):

- ``EpochPlan``: one finite, indexed source (its examples' widths known at start-up).
  Each epoch shuffles every bucket and the order of (bucket, batch) pairs and drops each
  bucket's remainder: every example is seen once per epoch.
- ``SamplingPlan``: a mixture of sources, or a rendered source. Each step draws its
  bucket from the mixture's bucket shares, then every slot a member (by weight, given
  the bucket) and an example of it: uniformly from an indexed member's examples of that
  bucket, or the next position of a rendered member's stream (a per-epoch permutation of
  ``synth:N``, or simply the position for an endless one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# Length of an endless source: positions are used as indices directly.
ENDLESS = -1


@dataclasses.dataclass
class Slots:
  """The rows of one step's host batch.

  Attributes:
    bucket: the width bucket of every row.
    members: (B,) which member (source) each row reads.
    refs: (B,) per row: for an indexed member, the position within that member's
      examples of ``bucket``; for a rendered member, the source index itself.
  """

  bucket: int
  members: np.ndarray
  refs: np.ndarray


class EpochPlan:
  """Epochs over one indexed source; see the module docstring.

  Args:
    bucket_sizes: this process's examples per bucket.
    batch_size: rows per process per step.
    seed: shuffling seed.
    counts: per-bucket example counts agreed by all processes (the smallest), so every
      process schedules the same bucket at every step.
    spec: the dataset, for the error message.

  Raises:
    ValueError: if the agreed counts cannot fill one batch.
  """

  def __init__(
      self,
      bucket_sizes: Sequence[int],
      batch_size: int,
      seed: int,
      counts: Sequence[int],
      spec: str,
  ):
    self.bucket_sizes = [int(n) for n in bucket_sizes]
    self.batch_size = batch_size
    self.seed = seed
    self.batches_per_bucket = [int(c) // batch_size for c in counts]
    self.steps_per_epoch = sum(self.batches_per_bucket)
    if self.steps_per_epoch == 0:
      raise ValueError(
          f"Dataset {spec}: {int(sum(counts))} usable examples (per process) cannot fill "
          f"one batch of {batch_size} per process; use a smaller train.batch_size or more "
          f"data."
      )
    self._epoch = -1

  def __getstate__(self):
    # The per-epoch draws are a cache: a copy in a worker process redraws them.
    state = dict(self.__dict__, _epoch=-1)
    state.pop("_order", None)
    state.pop("_perms", None)
    return state

  def _locate(self, step: int) -> tuple[int, int, np.ndarray]:
    """(bucket, batch number within the bucket, the bucket's shuffled order) of ``step``."""
    epoch, k = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      rng = np.random.default_rng([self.seed, epoch])
      order = [(b, j) for b, n in enumerate(self.batches_per_bucket) for j in range(n)]
      self._order = [order[k] for k in rng.permutation(len(order))]
      self._perms = [rng.permutation(n) for n in self.bucket_sizes]
      self._epoch = epoch
    b, j = self._order[k]
    return b, j, self._perms[b]

  def slots(self, step: int) -> Slots:
    b, j, order = self._locate(step)
    rows = order[j * self.batch_size : (j + 1) * self.batch_size]
    return Slots(b, np.zeros(len(rows), np.int64), rows.astype(np.int64))

  def replacement(
      self, step: int, slot: int, attempt: int, member: int = 0, bucket: int = 0
  ) -> int:
    """Another ref for a row whose example failed to read: the rows after this batch's."""
    b, j, order = self._locate(step)
    return int(order[((j + 1) * self.batch_size + attempt * self.batch_size + slot) % len(order)])


class SamplingPlan:
  """Mixtures and rendered sources; see the module docstring.

  Args:
    weights: (M,) relative weight of each member.
    shares: (M, NB) each member's fraction of examples per width bucket (rows sum to 1),
      agreed by all processes; for a rendered member, estimated from a sample.
    sizes: (M, NB) this process's examples per bucket of each indexed member; ignored
      for rendered members.
    lengths: (M,) for rendered members, the number of examples (``ENDLESS`` for an
      endless stream); 0 for indexed members.
    batch_size: rows per process per step.
    seed: the data seed.
    process_index, process_count: which rows of the global batch this process fills.
  """

  def __init__(
      self,
      weights: Sequence[float],
      shares: np.ndarray,
      sizes: np.ndarray,
      lengths: Sequence[int],
      *,
      batch_size: int,
      seed: int,
      process_index: int = 0,
      process_count: int = 1,
  ):
    weights = np.asarray(weights, np.float64)
    self.joint = weights[:, None] / weights.sum() * np.asarray(shares, np.float64)
    sizes = np.asarray(sizes, np.int64)
    self.lengths = np.asarray(lengths, np.int64)
    # From agreed numbers only, so every process draws the same bucket at every step.
    self.bucket_probs = self.joint.sum(axis=0) / self.joint.sum()
    self.expected_shares = self.joint.sum(axis=1) / self.joint.sum()
    # A bucket an indexed member has no example of in this process cannot draw it (with
    # shares from the smallest count over processes this never removes a positive share).
    indexed = self.lengths == 0
    self.joint[indexed[:, None] & (sizes == 0)] = 0.0
    self.sizes = sizes
    self.batch_size = batch_size
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self._perm_epoch = {}

  def __getstate__(self):
    return dict(self.__dict__, _perm_epoch={})

  def slots(self, step: int) -> Slots:
    b = int(
        np.random.default_rng([self.seed, step]).choice(len(self.bucket_probs), p=self.bucket_probs)
    )
    rng = np.random.default_rng([self.seed, step, self.process_index])
    cond = self.joint[:, b] / self.joint[:, b].sum()
    members = rng.choice(len(cond), size=self.batch_size, p=cond)
    draws = rng.random(self.batch_size)
    refs = np.zeros(self.batch_size, np.int64)
    first = (step * self.process_count + self.process_index) * self.batch_size
    for k, m in enumerate(members):
      refs[k] = self._ref(int(m), b, first + k, draws[k])
    return Slots(b, members.astype(np.int64), refs)

  def _ref(self, member: int, bucket: int, position: int, draw: float) -> int:
    n = int(self.lengths[member])
    if n == 0:  # indexed: any example of this bucket
      return min(int(draw * self.sizes[member, bucket]), self.sizes[member, bucket] - 1)
    if n == ENDLESS:
      return position
    epoch, k = divmod(position, n)
    key = (member, epoch)
    if key not in self._perm_epoch:
      if len(self._perm_epoch) > 4:
        self._perm_epoch.clear()
      self._perm_epoch[key] = np.random.default_rng([self.seed, member, epoch]).permutation(n)
    return int(self._perm_epoch[key][k])

  def replacement(self, step: int, slot: int, attempt: int, member: int, bucket: int) -> int:
    """Another ref of the same member for a row whose example could not be used."""
    rng = np.random.default_rng([self.seed, step, self.process_index, slot, attempt])
    n = int(self.lengths[member])
    if n == 0:
      return int(rng.integers(self.sizes[member, bucket]))
    return int(rng.integers(2**62 if n == ENDLESS else n))
