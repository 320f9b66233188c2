"""Orbax checkpoints: the latest few for resuming, and the best by word accuracy.

Two managers under the workdir, because one manager with ``best_fn`` keeps the
N best and may delete the latest step, which resuming needs:

- ``checkpoints/``: the latest ``max_to_keep`` steps;
- ``best/``: the single step with the highest evaluation word accuracy.

Each step holds ``state`` (the train state pytree) and ``meta`` (JSON: model
config, charset, preprocessing, parameter shapes, and a SHA-256 digest of every
array leaf), so a checkpoint can be used without the config that made it and a
mismatched model is caught before Orbax tries to restore into it.

Orbax checks its own index files but not array data: flipped bytes in a data file
restore without error as garbage weights. Every restore here therefore recomputes
the digests and raises ``CheckpointError`` naming the checkpoint and the leaf when
one differs. Resuming a run uses ``Checkpoints.restore_intact``, which sets a bad
checkpoint aside (renamed ``<step>.corrupt``) and falls back to the newest intact
one. A save interrupted before Orbax committed it (the process killed mid-write)
leaves only a temporary folder, which Orbax never lists as a step and which the
next run's manager deletes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from crnn_jax import distributed

# Test hook: ``CRNN_JAX_TEST_PAUSE_BEFORE_COMMIT=STEP`` makes the save of STEP print a
# line and wait forever after its files are written and before Orbax commits them
# (renames the temporary folder), so a test can kill the process mid-save
# deterministically. Unset, nothing changes.
PAUSE_BEFORE_COMMIT_ENV = "CRNN_JAX_TEST_PAUSE_BEFORE_COMMIT"


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: unreadable, or its arrays differ from their digests."""


def _leaf_name(path) -> str:
  # The same name whether the tree is a TrainState (attributes, namedtuples) or the
  # nested dicts Orbax returns when restoring without a target.
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _host_copy(x) -> np.ndarray:
  """The full value of one leaf, the same on every process."""
  if isinstance(x, jax.Array):
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    # Sharded across processes: every process takes part, in the same leaf order.
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def digests(tree) -> dict:
  """{'leaf/name': sha256 hex} over the dtype, shape and bytes of every array leaf.

  Parameters are replicated, so each process hashes its own full copy; the seed
  model with Adam state (~80 MB) takes about 0.1 s.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    value = np.ascontiguousarray(_host_copy(leaf))
    h = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    h.update(memoryview(value).cast("B") if value.size else b"")
    out[_leaf_name(path)] = h.hexdigest()
  return out


def verify(tree, meta: dict, where: str) -> None:
  """Raises CheckpointError unless ``tree`` matches the digests saved in ``meta``.

  Checkpoints saved before digests were recorded have none and pass unchecked.

  Raises:
    CheckpointError: naming ``where`` and the first leaves that differ, are missing
      or are extra.
  """
  saved = meta.get("digests")
  if saved is None:
    return
  got = digests(tree)
  differ = sorted(k for k in saved.keys() & got.keys() if saved[k] != got[k])
  missing = sorted(saved.keys() - got.keys())
  extra = sorted(got.keys() - saved.keys())
  if differ or missing or extra:
    more = " ..." if len(differ) > 3 else ""
    parts = (
        [
            (
                f"data of {', '.join(differ[:3])}{more} ({len(differ)} of {len(saved)} "
                f"arrays) differ from the digests taken at save"
            )
        ]
        if differ
        else []
    )
    parts += [f"arrays missing: {missing[:3]}"] if missing else []
    parts += [f"arrays not saved: {extra[:3]}"] if extra else []
    raise CheckpointError(
        f"Checkpoint {where} is corrupt: {'; '.join(parts)}. It cannot be "
        f"used; restore it from a copy or use another checkpoint."
    )


def param_shapes(params) -> dict:
  """{'path/to/leaf': [shape...]} of a parameter tree."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(np.shape(v)) for path, v in flat}


def check_compatible(saved: dict, current: dict, where: str):
  """Raises ValueError listing how two ``param_shapes`` dicts differ."""
  if saved == current:
    return
  missing = sorted(set(current) - set(saved))
  extra = sorted(set(saved) - set(current))
  differ = sorted(k for k in set(saved) & set(current) if saved[k] != current[k])
  parts = []
  if differ:
    parts.append(
        "shapes differ: "
        + ", ".join(f"{k} saved {saved[k]} vs model {current[k]}" for k in differ[:4])
    )
  if missing:
    parts.append(f"model has parameters the checkpoint lacks: {missing[:4]}")
  if extra:
    parts.append(f"checkpoint has parameters the model lacks: {extra[:4]}")
  raise ValueError(
      f"Checkpoint {where} was saved from a different model ({'; '.join(parts)}). Use the "
      f"model config it was trained with, another --workdir, or init_from to fine-tune."
  )


class _PauseBeforeCommit(ocp.path.atomicity.AtomicRenameTemporaryPath):
  """Orbax's commit by rename, stalled before the rename of one step (the test hook)."""

  async def finalize(self, *args, **kwargs):
    step = os.environ.get(PAUSE_BEFORE_COMMIT_ENV, "")
    if os.path.basename(str(self.get_final())) == step:
      print(f"test hook: checkpoint {step} written, pausing before its commit", flush=True)
      while True:
        await asyncio.sleep(3600)
    return await super().finalize(*args, **kwargs)


def _manager(directory: str, name: str, **options) -> ocp.CheckpointManager:
  # In a multi-process run every manager synchronises the processes with barriers named
  # after the operation ("save_start", ...). Two managers used side by side need their
  # own names, or process 0 can wait in one manager's barrier while process 1 waits in
  # the other's, and both hang until the coordination service aborts them.
  if os.environ.get(PAUSE_BEFORE_COMMIT_ENV) and not options.get("read_only"):
    options["temporary_path_class"] = _PauseBeforeCommit
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      item_names=("state", "meta"),
      options=ocp.CheckpointManagerOptions(
          multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name),
          **options,
      ),
  )


def _save_args(state, meta: dict) -> ocp.args.Composite:
  meta = dict(meta, digests=digests(state))
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


class Checkpoints:
  """The latest-k and best-1 checkpoint managers of one workdir."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3):
    self.workdir = workdir
    # cleanup_tmp_directories: deletes what a process killed mid-save left uncommitted.
    self.latest = _manager(
        os.path.join(workdir, "checkpoints"),
        "latest",
        create=True,
        max_to_keep=max_to_keep,
        cleanup_tmp_directories=True,
    )
    self.best = _manager(
        os.path.join(workdir, "best"),
        "best",
        create=True,
        max_to_keep=1,
        best_fn=lambda m: m["word_acc"],
        best_mode="max",
    )

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, meta: dict, *, force: bool = False):
    # One manager's asynchronous save at a time, so every process meets the barriers of
    # the two managers in the same order.
    self.best.wait_until_finished()
    self.latest.save(step, args=_save_args(state, meta), force=force)

  def save_best(self, step: int, state, meta: dict, metrics: dict):
    self.latest.wait_until_finished()
    if step in self.best.all_steps():
      # Saved before a resume from an earlier step: that history was abandoned, and
      # Orbax refuses to overwrite a step.
      self.best.delete(step)
    self.best.save(
        step,
        args=_save_args(state, meta),
        metrics={k: float(v) for k, v in metrics.items()},
        force=True,
    )

  def restore(self, state, step: int | None = None):
    """Restores ``(state, meta)`` at ``step`` (default latest) into the shapes and shardings of ``state``.

    Raises:
      CheckpointError: if the checkpoint cannot be read or its arrays differ from
        the digests saved with it.
      ValueError: if it was saved from a model of other shapes.
    """
    step = self.latest.latest_step() if step is None else step
    return restore_from(self.latest, step, state, where=self.where(step))

  def where(self, step: int) -> str:
    return os.path.join(str(self.latest.directory), str(step))

  def restore_intact(self, state, *, log: Callable[[str], None] = print):
    """Restores the newest intact checkpoint for resuming, setting bad ones aside.

    Every process must call this. A checkpoint that cannot be read or fails its
    digests (on any process) is renamed ``<step>.corrupt`` beside the others, with a
    warning, and the next older one is tried.

    Args:
      state: the fresh train state: the shapes, dtypes and shardings to restore into.
      log: where the warnings go.

    Returns:
      (state, step): the restored state and its step, or ``(state, None)`` unchanged
      when the workdir has no checkpoint.

    Raises:
      CheckpointError: if there are checkpoints but none is intact.
      ValueError: if a checkpoint was saved from a model of other shapes.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    errors = []
    for step in steps:
      error = None
      try:
        restored, _ = self.restore(state, step)
      except CheckpointError as e:
        error = str(e)
      # Every process read the same files; agree anyway, so none resumes alone.
      if distributed.any_process(error is not None):
        error = error or f"Checkpoint {self.where(step)} is corrupt on another process."
        errors.append(error)
        self._set_aside(step)
        older = [s for s in steps if s < step]
        log(
            f"warning: {error}\nwarning: moved it to {self.where(step)}.corrupt; "
            + (
                f"trying the checkpoint at step {older[0]}."
                if older
                else "no older checkpoint is left."
            )
        )
        continue
      return restored, step
    if errors:
      raise CheckpointError(
          f"None of the {len(errors)} checkpoints in {self.latest.directory} is intact (each "
          f"was moved to <step>.corrupt): {errors[-1]} To start afresh, use a new --workdir "
          f"or delete {self.latest.directory}; to fine-tune from another run, set init_from."
      )
    return state, None

  def _set_aside(self, step: int):
    path = self.where(step)
    if jax.process_index() == 0 and os.path.isdir(path):
      target = path + ".corrupt"
      if os.path.exists(target):
        target += f"-{int(time.time())}"
      os.rename(path, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"crnn_jax_set_aside_{step}")
    self.latest.reload()

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def guarded_read(what: Callable, where: str):
  """Runs a read of checkpoint ``where``, turning any failure into a CheckpointError."""
  try:
    return what()
  except Exception as e:  # tensorstore, JSON, missing files: all mean unreadable
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise CheckpointError(
        f"Checkpoint {where} cannot be read ({type(e).__name__}: "
        f"{first}). It is incomplete or damaged; use another "
        f"checkpoint."
    ) from e


def restore_from(manager: ocp.CheckpointManager, step: int, state, *, where: str):
  """``(state, meta)`` of ``step``, restored into the shapes and shardings of ``state`` and verified."""
  meta = guarded_read(lambda: read_meta(manager, step), where)
  check_compatible(meta.get("param_shapes", {}), param_shapes(state.params), where)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = guarded_read(
      lambda: manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
      ),
      where,
  )["state"]
  verify(restored, meta, where)
  return restored, meta


def open_checkpoint(path: str):
  """(manager, step) for a workdir, its ``checkpoints``/``best`` folder, or one step folder.

  Raises:
    ValueError: if no checkpoint is found there.
  """
  path = os.path.abspath(os.path.expanduser(path))
  candidates = []
  if os.path.basename(path).isdigit():
    candidates.append((os.path.dirname(path), int(os.path.basename(path))))
  for sub in ("best", "checkpoints", ""):
    candidates.append((os.path.join(path, sub) if sub else path, None))
  for directory, step in candidates:
    if not os.path.isdir(directory):
      continue
    mngr = _manager(directory, "open", read_only=True)
    steps = mngr.all_steps()
    if step is None and steps:
      return mngr, max(steps)
    if step is not None and step in steps:
      return mngr, step
  raise ValueError(
      f"No crnn_jax checkpoint found at {path!r}: give a training workdir, "
      f"its checkpoints/ or best/ folder, or a step folder inside one."
  )
