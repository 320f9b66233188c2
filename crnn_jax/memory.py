"""Host memory settings for training on CPU. Imports nothing heavy: call before JAX starts.

XLA allocates each training step's large buffers afresh. With glibc's default settings
each one is a fresh mmap whose pages the kernel faults in and zeroes on first touch;
on the project's 2-core machine that was ~15% of a step's CPU time (docs/speed.md).
``reuse_freed_memory`` keeps freed memory in the process for the next step instead.
"""

from __future__ import annotations

import ctypes
import os

# Set CRNN_JAX_MALLOC=system to keep glibc's defaults.
ENV_VAR = "CRNN_JAX_MALLOC"

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse instead of returning it to the system.

  One arena, no mmap for large blocks and no trimming: the next step reuses the pages
  the last one faulted in. The process keeps its peak footprint. Must run before JAX
  (or PyTorch) starts its threads.

  Returns:
    whether the settings were applied: False off glibc, or when the environment
    variable CRNN_JAX_MALLOC is ``system``.
  """
  if os.environ.get(ENV_VAR, "reuse") == "system":
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  return bool(
      libc.mallopt(_M_ARENA_MAX, 1)
      and libc.mallopt(_M_MMAP_MAX, 0)
      and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
  )
