"""Keeping the device fed: host batches placed on the device ahead of the step.

``DevicePrefetch`` pulls host batches from an iterator in a background thread, places
each on the device with ``put`` (for training, ``sharding.to_global``) and holds at most
``size`` placed batches, so waiting for the input pipeline and the host-to-device copy
of the next batches overlap the running step. The training loop's ``next()`` takes a
batch that is already on the device; the time it had to wait for one adds up in
``wait_seconds``, which the loop reports as a share of wall time ("data_wait 3%"). A
share well above zero means the accelerator is starved: the input pipeline, not the
step, bounds the speed.

Batches come out in the iterator's order, one thread pulls them (grain iterators are
not thread-safe), and an exception raised by the iterator or by ``put`` is raised by
the ``next()`` that would have returned that batch. ``size=0`` places each batch on
demand in the calling thread, with no thread at all. Every process of a multi-process
run prefetches its own rows: ``put`` must not need the other processes (building a
global array from process-local data does not).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# How often a blocked producer looks whether it was told to stop.
_POLL_S = 0.05


class DevicePrefetch:
  """An iterator over ``put(batch)`` for the batches of ``batches``, ``size`` ahead.

  Args:
    batches: host batches (e.g. ``TrainLoader(start)``); closed by ``close()`` if it
      has a ``close`` method.
    put: places one host batch on the device and returns what the step takes.
    size: placed batches held ahead of the consumer; 0 places on demand.

  Raises:
    ValueError: if ``size`` is negative.
  """

  def __init__(self, batches: Iterator, put: Callable[[Any], Any], size: int = 2):
    if size < 0:
      raise ValueError(f"prefetch size must be at least 0; got {size}.")
    self._batches = batches
    self._put = put
    self.size = int(size)
    # Seconds the consumer spent in next() waiting for a batch, in all.
    self.wait_seconds = 0.0
    self._done = False
    self._stop = threading.Event()
    self._thread = None
    if self.size:
      self._queue = queue.Queue(maxsize=self.size)
      self._thread = threading.Thread(
          target=self._produce, name="crnn_jax-device-prefetch", daemon=True
      )
      self._thread.start()

  def _offer(self, item) -> bool:
    """Queues ``item`` unless told to stop first; False if stopped."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        pass
    return False

  def _produce(self):
    try:
      for batch in self._batches:
        if self._stop.is_set() or not self._offer(("batch", self._put(batch))):
          return
      self._offer(("end", None))
    except BaseException as e:  # handed to the consumer, raised there
      self._offer(("error", e))

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    t = time.perf_counter()
    try:
      if not self.size:
        try:
          return self._put(next(self._batches))
        except StopIteration:
          self._done = True
          raise
      kind, value = self._queue.get()
    finally:
      self.wait_seconds += time.perf_counter() - t
    if kind == "batch":
      return value
    self._done = True
    if kind == "error":
      raise value
    raise StopIteration

  def close(self, timeout_s: float = 60.0):
    """Stops the thread (it finishes the batch it is reading) and closes ``batches``.

    Placed batches not taken are dropped. If the thread is still inside the iterator
    after ``timeout_s``, the iterator is left open (a generator cannot be closed while
    it runs); the thread is a daemon and ends with the process.
    """
    self._done = True
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout_s)
      if self._thread.is_alive():
        return
    close = getattr(self._batches, "close", None)
    if close is not None:
      close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
