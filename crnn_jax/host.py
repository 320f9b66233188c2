"""The host this process runs on, from the standard library only.

``crnn_jax.decode`` imports it, so it stays free of anything heavier than ``os``.
"""

import os


def usable_cores() -> int:
  """Cores this process may run on: its CPU affinity where the OS keeps one, else all."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1
