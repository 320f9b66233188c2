"""Steps whose loss or gradient is not finite: counting the skips, stopping on a streak.

``train.train_step`` skips such a step itself (no change to parameters, optimiser
state or BatchNorm statistics; only the step counter advances) and reports it as the
``nonfinite`` metric. ``Streak`` follows that metric on the host, one step behind
the device so that reading it never stalls the loop, and says when
``train.max_nonfinite_steps`` steps in a row were skipped: the run has diverged and
skipping more would only burn time.

``poison_for_test`` is a test hook: ``CRNN_JAX_TEST_NONFINITE_STEPS=3,4`` turns the
images of those (1-based) steps into NaNs, as a broken input pipeline would.
"""

from __future__ import annotations

import os

import jax
import numpy as np

NONFINITE_STEPS_ENV = "CRNN_JAX_TEST_NONFINITE_STEPS"


class NonFiniteError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient norm."""


class Streak:
  """Consecutive and total skipped steps, from the per-step ``nonfinite`` metric.

  Args:
    limit: consecutive skipped steps that end training (``train.max_nonfinite_steps``).
  """

  def __init__(self, limit: int):
    self.limit = limit
    self.total = 0
    self.consecutive = 0
    self.first = None  # first step of the current streak
    self._pending = []  # (step, device scalar) not read yet

  def add(self, step: int, flag: jax.Array, *, read_all: bool = False) -> bool:
    """Records step ``step``'s flag; True once ``limit`` steps in a row were skipped.

    Args:
      step: the 1-based step the flag belongs to.
      flag: the step's ``nonfinite`` metric, a device scalar.
      read_all: read this step's flag too (the loop is about to wait for it anyway,
        to log). Otherwise the newest flag is left for the next call: its step may
        still be running, while the one before it has finished or nearly, so
        reading that one never holds the loop back.
    """
    self._pending.append((step, flag))
    return self._read(len(self._pending) - (0 if read_all else 1))

  def _read(self, n: int) -> bool:
    ready, self._pending = self._pending[:n], self._pending[n:]
    for step, flag in ready:
      if int(jax.device_get(flag)):
        self.total += 1
        self.consecutive += 1
        self.first = step if self.consecutive == 1 else self.first
      else:
        self.consecutive = 0
    return self.consecutive >= self.limit

  def error(self, last_saved: int | None) -> NonFiniteError:
    """The error that ends the run, saying what happened and what to change."""
    saved = (
        f"the latest checkpoint (step {last_saved}) holds the finite parameters from "
        f"before them"
        if last_saved is not None
        else "no checkpoint was saved"
    )
    return NonFiniteError(
        f"Training stopped: {self.consecutive} consecutive steps ({self.first} to "
        f"{self.first + self.consecutive - 1}) had a non-finite loss or gradient norm and "
        f"were skipped ({self.total} skipped in this run; train.max_nonfinite_steps="
        f"{self.limit}). Parameters were not updated by them and {saved}. Lower "
        f"optim.learning_rate, set optim.grad_clip_norm (e.g. 5.0), or check the training "
        f"data read at these steps."
    )


def _poisoned_steps() -> frozenset:
  spec = os.environ.get(NONFINITE_STEPS_ENV, "")
  return frozenset(int(s) for s in spec.split(",") if s.strip())


def poison_for_test(host_batch: dict, step: int) -> dict:
  """``host_batch`` as is, unless the test hook names 1-based ``step``: then NaN images.

  While the hook is set every batch's images are float32, scaled to [0, 1] here as the
  model scales uint8, so the poisoned steps run the same compiled step.
  """
  steps = _poisoned_steps()
  if not steps:
    return host_batch
  images = host_batch["images"].astype(np.float32) / 255.0
  if step in steps:
    images = np.full_like(images, np.nan)
  return dict(host_batch, images=images)
