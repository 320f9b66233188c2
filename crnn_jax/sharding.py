"""Devices and data placement: one mesh over every device, batch split on ``data``.

State is replicated (``P()``); each batch array is split along its first axis.
Every process contributes its own rows with ``jax.make_array_from_process_local_data``,
so the same code runs on one CPU, several local devices, or many hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (of all processes), axis ``data``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "train.batch_size") -> int:
  """Per-process rows of a global batch; raises ValueError unless it splits evenly."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
        f"{what}={global_batch} is not divisible by the {n} devices; use a multiple of {n} "
        f"(e.g. {max(n, global_batch // n * n)})."
    )
  return global_batch // jax.process_count()


def to_global(host_batch: dict, mesh: Mesh) -> dict:
  """This process's rows -> global ``jax.Array``s split along ``data``."""
  sharding = batch_sharded(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in host_batch.items()
  }


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in the order it fed them."""
  if jax.process_count() == 1:
    return np.asarray(x)
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, parts = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # replicas along other axes hold the same rows
      seen.add(start)
      parts.append(np.asarray(s.data))
  return np.concatenate(parts)


def allgather(x) -> np.ndarray:
  """Stacks a small host array from every process: (num_processes, ...)."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x[None]
  return np.asarray(multihost_utils.process_allgather(x))
