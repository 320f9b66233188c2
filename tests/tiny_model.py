"""Shared by the inference tests: a tiny model config, its checkpoints, and TSV splits.

A checkpoint is written the way training writes one (``Checkpoints.save`` with
``train._meta``) but from freshly initialised weights, so no test waits on training.
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections
import numpy as np

from configs import base
from crnn_jax import checkpoints as ckpt_lib
from crnn_jax import models, sharding, train
from helpers import REAL  # noqa: F401  the real word crops (tests marked real_data)

UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def config(**overrides) -> ml_collections.ConfigDict:
  """The base config with a tiny model, two narrow buckets and small batches.

  ``overrides`` are dotted names: ``config(**{'model.charset': 'abc'})``.
  """
  c = base.get_config()
  c.model.conv_features = (8, 8, 16, 16, 16, 16, 16)
  c.model.lstm_hidden = 16
  c.model.lstm_layers = 1
  # XLA's own convolution compiles fastest; these tests are about everything around it.
  c.model.conv_impl = "xla"
  c.data.width_buckets = (64, 128)
  c.train.num_steps = 2
  c.train.batch_size = 8
  c.train.log_every_steps = 1
  c.eval.batch_size = 16
  c.eval.every_steps = 2
  c.eval.num_samples = 2
  c.checkpoint.every_steps = 2
  for name, value in overrides.items():
    group, _, field = name.rpartition(".")
    (c[group] if group else c)[field] = value
  return c


def make_state(cfg: ml_collections.ConfigDict, mesh=None, seed: int = 0):
  """A ``TrainState`` shaped as ``train_and_evaluate`` makes it, replicated over ``mesh``.

  Weights are random normal (scale 0.2) rather than the model's initialisers: ``init``
  takes many seconds to compile on a busy 2-core machine, ``eval_shape`` none. BatchNorm
  statistics are random too (means about 0 +- 0.1, variances in [0.5, 1.5]), as after
  training, so that a test can tell this state's statistics from another seed's or from
  a fresh model's 0/1.
  """
  mesh = mesh or sharding.make_mesh()
  charset = train.make_charset(cfg)
  model = models.from_config(cfg.model, charset.num_classes)
  abstract = jax.eval_shape(
      functools.partial(train.create_train_state, cfg, model), jax.random.key(seed)
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if names[0] == "params":
      value = rng.normal(0.0, 0.2, leaf.shape)
    elif names[0] == "batch_stats" and names[-1] == "var":
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif names[0] == "batch_stats":
      value = rng.normal(0.0, 0.1, leaf.shape)
    else:  # step, optimiser moments and counts
      value = np.zeros(leaf.shape)
    return jax.device_put(value.astype(leaf.dtype), sharding.replicated(mesh))

  return jax.tree_util.tree_map_with_path(fill, abstract), charset


def save_checkpoint(
    workdir: str, cfg: ml_collections.ConfigDict, *, seed: int = 0, step: int = 1
) -> str:
  """Writes a training-style checkpoint of fresh weights into ``workdir``; returns it."""
  state, charset = make_state(cfg, seed=seed)
  ckpts = ckpt_lib.Checkpoints(workdir)
  ckpts.save(step, state, train._meta(cfg, charset, state), force=True)
  ckpts.wait()
  ckpts.close()
  return workdir


def write_tsv(folder: str, set_name: str, lines: list[tuple[str, str]]) -> str:
  """A ``labels.tsv`` in ``folder`` naming images of a shared set by absolute path.

  Args:
    lines: (path relative to the set's folder, label) pairs.

  Returns:
    the ``tsv:`` spec of ``folder``.
  """
  os.makedirs(folder, exist_ok=True)
  root = os.path.join(REAL, set_name)
  with open(os.path.join(folder, "labels.tsv"), "w", encoding="utf-8") as f:
    for rel, label in lines:
      f.write(f"{os.path.join(root, rel)}\t{label}\n")
  return f"tsv:{folder}"


def read_labels(set_name: str) -> list[tuple[str, str]]:
  """The (relative path, label) lines of a shared set's ``labels.tsv``."""
  with open(os.path.join(REAL, set_name, "labels.tsv"), encoding="utf-8") as f:
    return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if "\t" in line]
