"""The training loader: cached and read-per-batch sources give the same batches, resumption
by step, grain worker processes, read-time failures replaced and counted."""

import io

import numpy as np
import pytest
from PIL import Image

from crnn_jax.charset import Charset
from crnn_jax.data import formats, index, labels, loader, plan, specs

from test_formats import _word_image, write_lmdb

BUCKETS = (64, 96, 128)
BATCH = 8
KW = dict(charset=Charset(), height=32, width_buckets=BUCKETS)


@pytest.fixture(scope="module")
def tfds_spec(tmp_path_factory):
  from crnn_jax.data import synth_words

  data_dir = tmp_path_factory.mktemp("tfds")
  synth_words.SynthWords(
      num_train=120,
      num_validation=10,
      seed=5,
      difficulty=0.3,
      num_workers=0,
      data_dir=str(data_dir),
  ).download_and_prepare()
  return f"tfds:synth_words/n120_v10_s5_d30_h32:train,data_dir={data_dir}"


def _loader(source, idx, seed=0, batch=BATCH, **kw):
  """An epoch loader over one indexed source, as inputs.train_loader builds it."""
  idx = idx.merge_up(idx.counts(), batch)
  p = plan.EpochPlan(idx.counts(), batch, seed, idx.counts(), source.spec)
  return loader.TrainLoader(
      [loader.Feed(source, idx)],
      p,
      widths=idx.widths,
      frames=idx.frames,
      batch_size=batch,
      charset=KW["charset"],
      height=32,
      seed=seed,
      **kw,
  )


def _both(source, seed=0, **kw):
  """(cached loader, read-per-batch loader) over the same source and settings."""
  cached = index.build_index(source, cache=True, **KW)
  headers = index.build_index(source, cache=False, **KW)
  return cached, headers, _loader(source, cached, seed), _loader(source, headers, seed, **kw)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_header_index_agrees_with_the_cache_and_batches_are_equal(tfds_spec):
  source = specs.open_source(tfds_spec)
  cached, headers, memory, stream = _both(source, seed=3)
  assert headers.cache is None and cached.cache is not None
  assert headers.report.usable == cached.report.usable and headers.report.skipped == (
      cached.report.skipped
  )
  assert [len(m) for m in headers.members] == [len(m) for m in cached.members]
  assert stream.plan.steps_per_epoch == memory.plan.steps_per_epoch >= 10
  steps = [0, 1, 7, stream.plan.steps_per_epoch + 2, 3 * stream.plan.steps_per_epoch - 1]
  for step in reversed(steps):  # any access order
    _assert_batches_equal(stream.batch(step), memory.batch(step))


def test_resumed_loader_reads_what_an_uninterrupted_run_reads(tfds_spec):
  source = specs.open_source(tfds_spec)
  *_, stream = _both(source, seed=1, num_threads=2)
  n = stream.plan.steps_per_epoch + 3  # across an epoch boundary
  full = stream(0)
  whole = [next(full) for _ in range(n)]
  full.close()
  resumed = stream(5)
  for step in range(5, n):
    _assert_batches_equal(next(resumed), whole[step])
  resumed.close()


def test_worker_processes_give_the_same_batches(tfds_spec):
  source = specs.open_source(tfds_spec)
  _, _, memory, stream = _both(source, seed=2, num_workers=2, num_threads=1, prefetch=1)
  it = stream(4)
  for step in range(4, 8):
    _assert_batches_equal(next(it), memory.batch(step))
  it.close()


def test_two_processes_index_disjoint_shards(tfds_spec):
  source = specs.open_source(tfds_spec)
  whole = index.build_index(source, **KW)
  parts = [index.build_index(source, process_index=p, process_count=2, **KW) for p in range(2)]
  sets = [set(np.concatenate(p.members).tolist()) for p in parts]
  assert sets[0] and sets[1] and not sets[0] & sets[1]
  assert sets[0] | sets[1] == set(np.concatenate(whole.members).tolist())
  assert sum(p.report.total for p in parts) == len(source)


def test_drop_mode_trains_labels_without_unknown_characters(tmp_path):
  words = ["Joe's", "e-mail", "plain", "$5.00", "--"]
  write_lmdb(tmp_path / "db", [(_word_image(w, "L", "PNG"), w) for w in words])
  source = formats.LmdbSource(tmp_path / "db")
  kw = dict(KW, unknown_chars="drop")
  cached = index.build_index(source, cache=True, **kw)
  headers = index.build_index(source, cache=False, **kw)
  for idx in (cached, headers):
    assert idx.report.usable == 4 and idx.report.skipped == {"unknown_chars": 1}
  assert sorted(c.text for c in cached.cache.values()) == sorted(words[:4])  # texts as given
  assert sorted(KW["charset"].decode(c.ids) for c in cached.cache.values()) == [
      "500",
      "Joes",
      "email",
      "plain",
  ]
  # The read-per-batch loader re-checks each label as it reads it, in the same mode; in
  # 'skip' mode it would replace these rows instead.
  memory = _loader(source, cached, batch=2)
  stream = _loader(source, headers, batch=2, unknown_chars="drop")
  for step in range(2 * stream.plan.steps_per_epoch):
    _assert_batches_equal(stream.batch(step), memory.batch(step))
  assert not stream.read_failures.skipped


def test_bad_input_is_indexed_out_or_replaced_at_read_time(tmp_path):
  words = [f"word{i}" for i in range(20)]
  items = [(_word_image(w, "L", "PNG"), w) for w in words]
  png = _word_image("trunc1", "L", "PNG")
  items.append((png[: len(png) - 40], "trunc1"))  # header fine, pixels cut short
  items.append((b"garbage", "garbage"))  # header unreadable: indexed out
  items.append((_word_image("x", "L", "PNG"), "naïve"))  # outside the charset
  items.append((_word_image("y", "L", "PNG"), ""))  # empty label
  write_lmdb(tmp_path / "db", items)
  source = formats.LmdbSource(tmp_path / "db")
  idx = index.build_index(source, cache=False, **KW)
  assert idx.report.total == 24 and idx.report.usable == 21
  assert idx.report.skipped == {"corrupt_image": 1, "unknown_chars": 1, "empty_label": 1}
  assert "#000000022" in idx.report.describe()
  logged = []
  stream = _loader(source, idx, batch=4, log=logged.append)
  merged = stream.feeds[0].index
  seen, hits = [], 0
  for step in range(3 * stream.plan.steps_per_epoch):
    batch = stream.batch(step)
    assert batch["images"].shape[0] == 4 and (batch["widths"] > 0).all()
    seen.append(batch["labels"])
    slots = stream.plan.slots(step)
    hits += 20 in merged.members[slots.bucket][slots.refs]  # the truncated image
  # Wherever the truncated image was planned, it was replaced, counted and logged by key.
  assert hits >= 1 and stream.read_failures.skipped["corrupt_image"] >= hits
  assert set(stream.read_failures.skipped) == {"corrupt_image"}
  assert len(logged) >= hits and all("#000000021" in line for line in logged)
  assert "trunc1" not in "".join(
      KW["charset"].decode([int(i) for i in row if i]) for b in seen for row in b
  )


def test_errors_and_empty_datasets(tmp_path):
  write_lmdb(tmp_path / "db", [(b"junk", "abc")])
  idx = index.build_index(formats.LmdbSource(tmp_path / "db"), cache=False, **KW)
  with pytest.raises(ValueError, match=r"(?s)0 of 1 examples usable.*unreadable"):
    labels.check_usable(idx.report)
  with pytest.raises(ValueError, match="cannot fill one batch"):
    plan.EpochPlan(idx.counts(), 4, 0, idx.counts(), "db")
  with pytest.raises(ValueError, match="width_buckets"):
    index.build_index(
        formats.LmdbSource(tmp_path / "db"), charset=Charset(), height=32, width_buckets=(30,)
    )


def test_target_width_follows_prepare():
  # 50x25 -> 64 wide at height 32; a label needing 20 frames widens it to 84.
  kw = dict(model_height=32, max_width=128, resize_mode="pad")
  assert index.target_width(50, 25, need_frames=3, **kw) == 64
  assert index.target_width(50, 25, need_frames=20, **kw) == 84
  assert index.target_width(5000, 25, need_frames=3, **kw) == 128
  image = Image.new("L", (50, 25), 255)
  buf = io.BytesIO()
  image.save(buf, "PNG")
  assert formats.image_size(buf.getvalue(), "k") == (50, 25)
