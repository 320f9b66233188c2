"""Worker processes for the data path: grain's multiprocessing prefetch, set up in one place.

The training loader (batches) and the renderer (index ranges) both hand work to grain
worker processes. grain starts them with 'spawn', which is safe next to JAX's threads
(the calling script needs an ``if __name__ == "__main__":`` guard), and its workers read
absl flags, which a library caller (a test, a notebook) may not have parsed.
"""

from __future__ import annotations


def prefetch(dataset, *, num_workers: int, buffer: int):
  """``dataset`` (a ``grain.IterDataset``) produced by ``num_workers`` worker processes,
  each keeping up to ``buffer`` elements ready; elements keep their order."""
  import grain
  from absl import flags

  # scripts/train.py has parsed its flags and is left alone.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return dataset.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=buffer)
  )
