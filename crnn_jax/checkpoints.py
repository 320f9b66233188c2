"""Orbax checkpoints: the latest few for resuming, and the best by word accuracy.

Two managers under the workdir, because one manager with ``best_fn`` keeps the
N best and may delete the latest step, which resuming needs:

- ``checkpoints/``: the latest ``max_to_keep`` steps;
- ``best/``: the single step with the highest evaluation word accuracy.

Each step holds ``state`` (the train state pytree) and ``meta`` (JSON: model
config, charset, preprocessing, parameter shapes), so a checkpoint can be used
without the config that made it and a mismatched model is caught before Orbax
tries to restore into it.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def param_shapes(params) -> dict:
  """{'path/to/leaf': [shape...]} of a parameter tree."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(np.shape(v))
          for path, v in flat}


def check_compatible(saved: dict, current: dict, where: str):
  """Raises ValueError listing how two ``param_shapes`` dicts differ."""
  if saved == current:
    return
  missing = sorted(set(current) - set(saved))
  extra = sorted(set(saved) - set(current))
  differ = sorted(k for k in set(saved) & set(current) if saved[k] != current[k])
  parts = []
  if differ:
    parts.append("shapes differ: " + ", ".join(
        f"{k} saved {saved[k]} vs model {current[k]}" for k in differ[:4]))
  if missing:
    parts.append(f"model has parameters the checkpoint lacks: {missing[:4]}")
  if extra:
    parts.append(f"checkpoint has parameters the model lacks: {extra[:4]}")
  raise ValueError(
      f"Checkpoint {where} was saved from a different model ({'; '.join(parts)}). Use the "
      f"model config it was trained with, another --workdir, or init_from to fine-tune.")


def _manager(directory: str, name: str, **options) -> ocp.CheckpointManager:
  # In a multi-process run every manager synchronises the processes with barriers named
  # after the operation ("save_start", ...). Two managers used side by side need their
  # own names, or process 0 can wait in one manager's barrier while process 1 waits in
  # the other's, and both hang until the coordination service aborts them.
  return ocp.CheckpointManager(
      os.path.abspath(directory), item_names=("state", "meta"),
      options=ocp.CheckpointManagerOptions(
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=name), **options))


def _save_args(state, meta: dict) -> ocp.args.Composite:
  return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


class Checkpoints:
  """The latest-k and best-1 checkpoint managers of one workdir."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3):
    self.workdir = workdir
    self.latest = _manager(os.path.join(workdir, "checkpoints"), "latest", create=True,
                           max_to_keep=max_to_keep)
    self.best = _manager(os.path.join(workdir, "best"), "best", create=True, max_to_keep=1,
                         best_fn=lambda m: m["word_acc"], best_mode="max")

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, meta: dict, *, force: bool = False):
    # One manager's asynchronous save at a time, so every process meets the barriers of
    # the two managers in the same order.
    self.best.wait_until_finished()
    self.latest.save(step, args=_save_args(state, meta), force=force)

  def save_best(self, step: int, state, meta: dict, metrics: dict):
    self.latest.wait_until_finished()
    self.best.save(step, args=_save_args(state, meta),
                   metrics={k: float(v) for k, v in metrics.items()}, force=True)

  def restore(self, state, step: int | None = None):
    """Restores ``(state, meta)`` at ``step`` (default latest) into the shapes and shardings of ``state``."""
    step = self.latest.latest_step() if step is None else step
    return restore_from(self.latest, step, state, where=f"{self.workdir}/checkpoints/{step}")

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_from(manager: ocp.CheckpointManager, step: int, state, *, where: str):
  meta = read_meta(manager, step)
  check_compatible(meta.get("param_shapes", {}), param_shapes(state.params), where)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  return restored["state"], restored["meta"]


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
  raise ValueError(f"No crnn_jax checkpoint found at {path!r}: give a training workdir, "
                   f"its checkpoints/ or best/ folder, or a step folder inside one.")
