"""Multi-process set-up: join JAX's multi-controller runtime, then check the processes agree.

One process per host (or per GPU under SLURM/Open MPI). ``initialize`` is a no-op
for a single process, so the same command runs on one CPU and on a pod slice.
``any_process`` turns a local decision (a SIGTERM seen by one host, a checkpoint that
one host could not read) into the same decision on every process.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os

import jax
import numpy as np

from crnn_jax import sharding

# Environment variables that mean "this is one process of several".
_CLUSTER_HINTS = (
    ("SLURM_NTASKS", "SLURM"),
    ("OMPI_COMM_WORLD_SIZE", "Open MPI"),
)


def detect_cluster() -> str | None:
  """The cluster kind that ``jax.distributed.initialize()`` can configure itself, if any."""
  for var, name in _CLUSTER_HINTS:
    if int(os.environ.get(var, "1") or 1) > 1:
      return name
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts:
    return "Cloud TPU pod slice"
  return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    num_cpu_devices: int | None = None,
    heartbeat_timeout_seconds: int = 30,
    initialization_timeout: int = 120,
) -> bool:
  """Joins the processes of a multi-process run; returns whether it is one.

  Args:
    coordinator_address: 'host:port' of process 0; with ``num_processes`` and
      ``process_id`` for an explicit launch. Without them, TPU pods, SLURM and
      Open MPI are detected from the environment.
    num_cpu_devices: split each CPU process into this many JAX devices.
    heartbeat_timeout_seconds: how long a silent process is waited for before
      the others stop with an error.
    initialization_timeout: how long to wait for every process to join.

  Raises:
    ValueError: when only some of the explicit arguments are given.
  """
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))
  explicit = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    raise ValueError(
        "Give all of --coordinator-address, --num-processes and --process-id "
        "for an explicit multi-process launch (or none of them)."
    )
  if all(v is not None for v in explicit):
    if num_processes == 1:
      return False
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        initialization_timeout=initialization_timeout,
    )
    return True
  if detect_cluster():
    jax.distributed.initialize(
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        initialization_timeout=initialization_timeout,
    )
    return jax.process_count() > 1
  return False


def fingerprint(config) -> dict:
  """What every process of one run must agree on."""
  return {
      "config": hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16],
      "local_devices": jax.local_device_count(),
      "platform": jax.devices()[0].platform,
  }


def check_agreement(config) -> None:
  """Raises ValueError on every process if the processes differ in config or devices.

  One small all-gather; run it before anything that would hang on a mismatch
  (different batch shapes make collectives wait forever).
  """
  if jax.process_count() == 1:
    return
  # The all-gather below needs the same device count on every process (it fails with a
  # reshape error otherwise); every process sees the global device list, so all decide alike.
  counts = collections.Counter(d.process_index for d in jax.devices())
  if len(set(counts.values())) > 1:
    rows = "; ".join(f"process {i}: local_devices={counts[i]}" for i in sorted(counts))
    raise ValueError(
        f"The {jax.process_count()} processes disagree on ['local_devices'] "
        f"({rows}). Launch every process with the same config, overrides and "
        f"device count."
    )
  mine = fingerprint(config)
  encoded = np.frombuffer(json.dumps(mine, sort_keys=True).encode().ljust(256), np.uint8)
  every = sharding.allgather(encoded)
  decoded = [json.loads(bytes(row).decode().strip()) for row in every]
  differ = {k for d in decoded for k in d if d[k] != decoded[0][k]}
  if differ:
    rows = "; ".join(
        f"process {i}: " + ", ".join(f"{k}={d[k]}" for k in sorted(differ))
        for i, d in enumerate(decoded)
    )
    raise ValueError(
        f"The {len(decoded)} processes disagree on {sorted(differ)} ({rows}). "
        f"Launch every process with the same config, overrides and device count."
    )


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true on any process; the same answer on every process.

  Every process must call it at the same point: it is one all-gather of one byte
  (none with a single process). The training loop calls it once per step so that a
  SIGTERM reaching one host stops every host after the same step.
  """
  if jax.process_count() == 1:
    return bool(flag)
  return bool(sharding.allgather(np.uint8(bool(flag))).any())
