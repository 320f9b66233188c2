"""Tests for crnn_jax.distributed that need no second process (test_multihost.py runs real
ones): the agreement check on device counts."""

import types

import jax
import pytest

from crnn_jax import distributed
from helpers import tiny_config


def test_device_count_mismatch_is_a_clear_error_on_every_process(monkeypatch):
  """Two processes, 4 and 2 devices, as every process sees the global device list.

  Breaks if the check reaches the all-gather, which needs equal device counts and fails
  with "cannot reshape array of size 6 into shape (2,4)" (checked with two real
  processes launched as in test_multihost.py: --num_cpu_devices=4 and =2), or if the
  message does not name the counts of each process.
  """
  devices = [types.SimpleNamespace(process_index=p) for p in (0, 0, 0, 0, 1, 1)]
  monkeypatch.setattr(jax, "devices", lambda *a: devices)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(
      ValueError,
      match=r"processes disagree on \['local_devices'\] "
      r"\(process 0: local_devices=4; process 1: local_devices=2\)",
  ):
    distributed.check_agreement(tiny_config())
