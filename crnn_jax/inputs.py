"""From the training config to the data layer: the training loader and the evaluation sets.

The data layer (``crnn_jax.data``) takes plain arguments and knows nothing of processes
or devices. This module reads ``config.data``, opens every source, and makes the
processes of a multi-process run agree where they must (usable counts, bucket counts
and shares, all via ``sharding.allgather``) before handing the data layer its numbers.
It also prints what each source held and skipped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from crnn_jax import charset as charset_lib
from crnn_jax import sharding
from crnn_jax.data import index as index_lib
from crnn_jax.data import labels as labels_lib
from crnn_jax.data import loader as loader_lib
from crnn_jax.data import mixture, plan, preprocess, readers, specs

# Rendered images that tell which width bucket a word of each length lands in, and text
# draws (cheap) that give a rendered member's share of each bucket.
_WIDTH_SAMPLE = 256
_TEXT_SAMPLE = 4096


def _open(
    spec: str, config: ml_collections.ConfigDict, charset: charset_lib.Charset
) -> readers.Source:
  return specs.open_source(
      spec, height=config.model.height, charset=charset.chars if spec.startswith("synth:") else None
  )


def _index(
    source: readers.Source, config, charset, *, cache: bool | None = None
) -> index_lib.Index:
  d = config.data
  return index_lib.build_index(
      source,
      charset=charset,
      height=config.model.height,
      width_buckets=d.width_buckets,
      resize_mode=d.resize_mode,
      unknown_chars=d.unknown_chars,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      cache=cache,
  )


def _describe(report: labels_lib.DataReport, what: str, seconds: float) -> tuple[str, int]:
  """The start-up line for one source, and its usable count over all processes."""
  usable = int(sharding.allgather(report.usable).sum())
  total = int(sharding.allgather(report.total).sum())
  many = jax.process_count() > 1
  return (
      f"{what}: {report.describe()}"
      + (f" [this process; {usable} of {total} over all]" if many else "")
      + f" ({seconds:.1f}s)"
  ), usable


def _rendered_buckets(
    source: readers.Source, config, charset, widths: list, frames: list
) -> tuple[np.ndarray, np.ndarray]:
  """(P(bucket | text length), share of each bucket) for a rendered source.

  Rendered words are not indexed, so their widths are unknown until they are drawn. A
  fixed sample of rendered words tells how often a word of each length lands in each
  bucket; for a step of bucket b the loader then accepts the stream's next words with
  probability P(b | length) (a cheap text draw, no rendering), so the words of a bucket's
  steps are distributed as the words that naturally land there, and few need squeezing.
  """
  votes = np.zeros((64, len(widths)))
  for item in source.read_many(range(min(_WIDTH_SAMPLE, len(source)))):
    if isinstance(item, readers.BadExample):
      continue
    image, text, _ = item
    ids = labels_lib.check_label(text, charset, frames[-1])
    if isinstance(ids, tuple):
      continue
    img = preprocess.resize(
        image, height=config.model.height, max_width=widths[-1], mode=config.data.resize_mode
    )
    img = preprocess.fit(
        img, widths[-1], labels_lib.required_frames(ids), mode=config.data.resize_mode
    )
    votes[min(len(text), 63), next(b for b, w in enumerate(widths) if w >= img.shape[1])] += 1
  if not votes.sum():
    raise ValueError(
        f"data.train member {source.spec!r}: none of {_WIDTH_SAMPLE} rendered "
        f"words is usable with this charset and these width buckets."
    )
  seen = np.flatnonzero(votes.sum(axis=1))
  # Unseen lengths take the nearest seen length's distribution.
  near = seen[np.argmin(np.abs(seen[None, :] - np.arange(64)[:, None]), axis=1)]
  by_length = votes[near] / votes[near].sum(axis=1, keepdims=True)
  lengths = np.minimum([len(source.text(i)) for i in range(_TEXT_SAMPLE)], 63)
  shares = by_length[lengths].mean(axis=0)
  return by_length, shares / shares.sum()


def train_loader(
    config: ml_collections.ConfigDict, charset: charset_lib.Charset, *, log: Callable[[str], None]
) -> loader_lib.TrainLoader:
  """The training loader for ``config.data.train`` (a spec or a mixture of specs).

  One indexed source trains in epochs (``plan.EpochPlan``); a mixture or a rendered
  source is sampled (``plan.SamplingPlan``).

  Raises:
    ValueError: for bad data options, or a member with no usable example, naming it.
  """
  d = config.data
  widths, frames = index_lib.check_buckets(d.width_buckets, d.unknown_chars, d.resize_mode)
  members = mixture.parse(d.train, what="data.train")
  per_host = config.train.batch_size // jax.process_count()
  feeds, shares, sizes, lengths = [], [], [], []
  for m in members:
    t0 = time.time()
    source = _open(m.spec, config, charset)
    if source.rendered:
      by_length, share = _rendered_buckets(source, config, charset, widths, frames)
      feeds.append(loader_lib.Feed(source, bucket_of_length=by_length))
      shares.append(share)
      sizes.append(np.zeros(len(widths), np.int64))
      lengths.append(plan.ENDLESS if getattr(source, "endless", False) else len(source))
      log(
          f"train data: {m.spec}: rendered while training"
          + ("" if lengths[-1] == plan.ENDLESS else f", {len(source)} words")
      )
      continue
    idx = _index(source, config, charset)
    line, usable = _describe(idx.report, "train data", time.time() - t0)
    log(line)
    try:
      labels_lib.check_usable(idx.report, usable)
    except ValueError as e:
      raise ValueError(f"data.train member {m.spec!r} has no usable example.\n{e}") from None
    feeds.append(loader_lib.Feed(source, idx))
    agreed = sharding.allgather(idx.counts()).min(axis=0)
    shares.append(agreed / max(agreed.sum(), 1))
    sizes.append(idx.counts())
    lengths.append(0)

  if len(feeds) == 1 and feeds[0].index is not None:
    idx = feeds[0].index
    idx = idx.merge_up(sharding.allgather(idx.counts()).min(axis=0), per_host)
    feeds[0].index = idx
    widths, frames = idx.widths, idx.frames
    batch_plan = plan.EpochPlan(
        idx.counts(),
        per_host,
        config.train.seed,
        sharding.allgather(idx.counts()).min(axis=0),
        members[0].spec,
    )
    log(
        "train buckets (width: examples): "
        + ", ".join(f"{w}: {len(m)}" for w, m in zip(idx.widths, idx.members))
        + f"; {batch_plan.steps_per_epoch} steps per epoch"
    )
  else:
    shares = np.stack(shares)
    for m, s in zip(members, shares):
      if not s.sum():
        raise ValueError(
            f"data.train member {m.spec!r} has no usable example in every " f"process."
        )
    batch_plan = plan.SamplingPlan(
        [m.weight for m in members],
        shares,
        np.stack(sizes),
        lengths,
        batch_size=per_host,
        seed=config.train.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    log(
        "train mixture (share of rows, expected): "
        + ", ".join(f"{m.spec} {s:.1%}" for m, s in zip(members, batch_plan.expected_shares))
        + "; width buckets "
        + ", ".join(f"{w}: {p:.1%}" for w, p in zip(widths, batch_plan.bucket_probs))
    )
  # Batches of cached examples cost only their assembly: worker processes pay off where
  # examples are rendered, read from disk or augmented.
  busy = d.augment > 0 or any(f.index is None or f.index.cache is None for f in feeds)
  workers = int(d.num_workers) if busy else 0
  log(
      f"train input: {workers} worker process(es)"
      + ("" if busy else " (cached data, nothing to render, read or augment)")
      + f", augmentation strength {d.augment}"
  )
  return loader_lib.TrainLoader(
      feeds,
      batch_plan,
      widths=widths,
      frames=frames,
      batch_size=per_host,
      charset=charset,
      height=config.model.height,
      resize_mode=d.resize_mode,
      unknown_chars=d.unknown_chars,
      augment=d.augment,
      seed=config.train.seed,
      process_index=jax.process_index(),
      num_workers=workers,
      log=log,
  )


def member_names(specs: list) -> list:
  """Short, unique names for specs (TensorBoard tags and log lines)."""
  names = []
  for spec in specs:
    kind, _, rest = spec.partition(":")
    head, opts = rest.split(",")[0], dict(o.split("=", 1) for o in rest.split(",")[1:] if "=" in o)
    if "include" in opts:
      name = os.path.splitext(os.path.basename(opts["include"]))[0]
    elif kind in ("tsv", "lmdb", "mjsynth"):
      name = os.path.basename(os.path.normpath(head)) or kind
    elif kind == "tfds":
      name = head.split(":")[0].replace("/", "_")
    else:
      name = kind
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    base, k = name, 2
    while name in names:
      name, k = f"{base}_{k}", k + 1
    names.append(name)
  return names


@dataclasses.dataclass
class EvalSet:
  name: str
  spec: str
  index: index_lib.Index


class EvalSets:
  """The evaluation sets of ``config.data.eval`` (one spec or several, separated by ``|``).

  Sources are opened at once (a wrong path fails at start-up); reading, rendering and
  preprocessing run in a background thread, so training starts without waiting for
  them, and ``get()`` joins it at the first evaluation. The processes agree on usable
  counts there, in the main thread.
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      charset: charset_lib.Charset,
      *,
      log: Callable[[str], None],
  ):
    members = mixture.parse(config.data.eval, what="data.eval", weights=False)
    self.specs = [m.spec for m in members]
    self.names = member_names(self.specs)
    sources = [_open(spec, config, charset) for spec in self.specs]
    self._log = log
    self._sets = None

    def prepare():
      out = []
      for source in sources:
        t0 = time.time()
        out.append((_index(source, config, charset, cache=True), time.time() - t0))
      return out

    self._pool = concurrent.futures.ThreadPoolExecutor(1)
    self._future = self._pool.submit(prepare)

  def get(self) -> list:
    """The prepared sets (waits for them the first time)."""
    if self._sets is None:
      prepared = self._future.result()
      self._pool.shutdown()
      self._sets = []
      for name, spec, (idx, seconds) in zip(self.names, self.specs, prepared):
        line, usable = _describe(idx.report, f"eval data [{name}]", seconds)
        self._log(line)
        labels_lib.check_usable(idx.report, usable)
        self._sets.append(EvalSet(name, spec, idx))
    return self._sets
