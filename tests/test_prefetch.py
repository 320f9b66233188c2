import threading
import time

import jax
import numpy as np
import pytest

from crnn_jax import prefetch, sharding


def _host_batches(n, closed=None):
  """n distinct host batches (as the loader yields them); sets ``closed`` when closed."""
  try:
    for step in range(n):
      rng = np.random.default_rng(step)
      yield {
          "images": rng.integers(0, 256, (16, 32, 64), dtype=np.uint8),
          "widths": np.full((16,), 64 - step, np.int32),
      }
  finally:
    if closed is not None:
      closed.set()


@pytest.mark.parametrize("size", [0, 1, 2])
def test_same_batches_in_the_same_order_on_the_devices(size):
  mesh = sharding.make_mesh()
  put = lambda b: sharding.to_global(b, mesh)
  got = list(prefetch.DevicePrefetch(_host_batches(6), put, size))
  want = list(_host_batches(6))
  assert len(got) == len(want) == 6
  for g, w in zip(got, want):
    assert g["images"].sharding == sharding.batch_sharded(mesh)
    for k in w:
      np.testing.assert_array_equal(np.asarray(g[k]), w[k])


def test_holds_at_most_size_batches_ahead():
  pulled = []

  def source():
    for i in range(100):
      pulled.append(i)
      yield i

  feed = prefetch.DevicePrefetch(source(), lambda b: b, size=2)
  assert next(feed) == 0
  time.sleep(0.2)
  # One taken, two queued, and at most one more read and waiting for room.
  assert len(pulled) <= 4
  feed.close()


def test_an_error_is_raised_where_its_batch_would_have_been():
  def source():
    yield 1
    yield 2
    raise OSError("disk gone")

  for size in (0, 2):
    feed = prefetch.DevicePrefetch(source(), lambda b: b * 10, size)
    assert next(feed) == 10 and next(feed) == 20
    with pytest.raises(OSError, match="disk gone"):
      next(feed)
    with pytest.raises(StopIteration):
      next(feed)


def test_close_stops_the_thread_and_closes_the_source():
  closed = threading.Event()
  feed = prefetch.DevicePrefetch(_host_batches(1000, closed), lambda b: b, size=2)
  next(feed)
  feed.close()
  assert closed.is_set()
  assert not any(
      t.name == "crnn_jax-device-prefetch" and t.is_alive() for t in threading.enumerate()
  )
  with pytest.raises(StopIteration):
    next(feed)


def test_wait_seconds_counts_a_slow_source_only():
  def slow():
    for i in range(3):
      time.sleep(0.1)
      yield i

  feed = prefetch.DevicePrefetch(slow(), lambda b: b, size=2)
  assert list(feed) == [0, 1, 2]
  assert feed.wait_seconds >= 0.2  # the consumer outpaced the source

  feed = prefetch.DevicePrefetch(iter(range(3)), lambda b: b, size=2)
  deadline = time.time() + 10
  while not feed._queue.full() and time.time() < deadline:
    time.sleep(0.01)  # the queue fills while the "step" runs
  next(feed)
  assert feed.wait_seconds < 0.05


def test_negative_size_is_a_clear_error():
  with pytest.raises(ValueError, match="prefetch size must be at least 0; got -1"):
    prefetch.DevicePrefetch(iter(()), jax.device_put, -1)
