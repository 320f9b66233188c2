"""Mixtures: the spec syntax, the sampling plan's shares and purity, and the hardest input
path end to end (endless rendered words mixed with real crops, augmented, read by worker
processes) resuming exactly."""

import numpy as np
import pytest

from configs import base
from crnn_jax import inputs
from crnn_jax.charset import Charset
from crnn_jax.data import mixture, plan

from helpers import real


def test_parse_weights_spaces_and_plain_specs():
  members = mixture.parse("synth:inf,seed=3 @ 3 | tsv:/a/b,exclude=x.txt@1.5 |tsv:c")
  assert members == [
      mixture.Member("synth:inf,seed=3", 3.0),
      mixture.Member("tsv:/a/b,exclude=x.txt", 1.5),
      mixture.Member("tsv:c", 1.0),
  ]
  assert mixture.parse("tsv:p@q") == [mixture.Member("tsv:p@q", 1.0)]  # '@' in a path is kept


@pytest.mark.parametrize(
    "text, match",
    [
        ("tsv:a @ 0 | tsv:b", "'tsv:a' has weight 0"),
        ("tsv:a @ -1", "weights must be positive"),
        ("tsv:a | | tsv:b", "empty member"),
        ("tsv:a | tsv:a", "appears twice"),
    ],
)
def test_parse_errors_name_the_member(text, match):
  with pytest.raises(ValueError, match=match):
    mixture.parse(text)


def test_eval_sets_take_no_weights():
  with pytest.raises(ValueError, match="evaluation sets"):
    mixture.parse("tsv:a @ 2", what="data.eval", weights=False)


def _sampling(process_index=0, process_count=1, batch_size=50, seed=0):
  # Member 0 indexed (all three buckets), 1 rendered and endless, 2 indexed (bucket 1 only).
  shares = np.array([[0.2, 0.5, 0.3], [0.3, 0.6, 0.1], [0.0, 1.0, 0.0]])
  sizes = np.array([[20, 50, 30], [0, 0, 0], [0, 40, 0]])
  return plan.SamplingPlan(
      [0.5, 0.3, 0.2],
      shares,
      sizes,
      [0, plan.ENDLESS, 0],
      batch_size=batch_size,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
  )


def test_member_shares_match_weights_over_10k_draws():
  """Rows per member over 10k draws match the weights within 4 standard deviations.

  A plan that drew members without conditioning on the bucket (or ignored weights) would
  be off by far more than the tolerance.
  """
  p = _sampling()
  counts = np.zeros(3)
  buckets = np.zeros(3)
  for step in range(200):  # 200 steps x 50 rows
    slots = p.slots(step)
    counts += np.bincount(slots.members, minlength=3)
    buckets[slots.bucket] += 1
    for m, ref in zip(slots.members, slots.refs):
      if m == 2:
        assert slots.bucket == 1 and 0 <= ref < 40  # only where it has examples
      if m == 0:
        assert 0 <= ref < [20, 50, 30][slots.bucket]
  n = counts.sum()
  sd = np.sqrt(n * np.array([0.5, 0.3, 0.2]) * (1 - np.array([0.5, 0.3, 0.2])))
  assert (np.abs(counts - n * np.array([0.5, 0.3, 0.2])) < 4 * sd).all(), counts / n
  np.testing.assert_allclose(p.expected_shares, [0.5, 0.3, 0.2])
  assert (buckets > 0).all()


def test_sampling_plan_is_pure_and_processes_agree_on_buckets():
  a, b = _sampling(), _sampling()
  for step in [9, 0, 3, 1000, 3]:  # any order, fresh or reused plan
    x, y = a.slots(step), b.slots(step)
    assert x.bucket == y.bucket
    np.testing.assert_array_equal(x.members, y.members)
    np.testing.assert_array_equal(x.refs, y.refs)
  p0, p1 = _sampling(0, 2, 25), _sampling(1, 2, 25)
  rendered = []
  for step in range(50):
    s0, s1 = p0.slots(step), p1.slots(step)
    assert s0.bucket == s1.bucket  # one global shape
    rendered += [r for s in (s0, s1) for m, r in zip(s.members, s.refs) if m == 1]
  assert len(rendered) == len(set(rendered))  # an endless stream never repeats a word


def _config(tmp_path, augment=0.5, workers=2):
  config = base.get_config()
  config.data.train = f"synth:inf,seed=4,difficulty=0.5 @ 2 | tsv:{real('svt_train')} @ 1"
  config.data.width_buckets = (64, 128)
  config.data.augment = augment
  config.data.num_workers = workers
  config.train.batch_size = 8
  return config


@pytest.mark.real_data
def test_endless_words_mixed_with_real_crops_resume_exactly(tmp_path):
  """The hardest path: rendered-while-training words mixed with a real TSV set, augmentation
  on, batches made in two worker processes. A run resumed at step 5 reads exactly the
  batches an uninterrupted run reads from step 5 on, and both equal the batches made in
  this process. Breaking it: seeding augmentation or the word stream from anything but
  (seed, step, row), or letting a worker's state leak into a batch.
  """
  logged = []
  loader = inputs.train_loader(_config(tmp_path), Charset(), log=logged.append)
  assert any("synth:inf" in line and "%" in line for line in logged)  # shares printed
  full = loader(0)
  whole = [next(full) for _ in range(9)]
  full.close()
  resumed = loader(5)
  for step in range(5, 9):
    batch = next(resumed)
    for key in whole[step]:
      np.testing.assert_array_equal(batch[key], whole[step][key], err_msg=f"{key} {step}")
  resumed.close()
  here = inputs.train_loader(_config(tmp_path, workers=0), Charset(), log=logged.append)
  for step in (0, 7):
    for key in whole[step]:
      np.testing.assert_array_equal(here.batch(step)[key], whole[step][key])
  # Augmentation is on: the same rows without it differ.
  plain = inputs.train_loader(
      _config(tmp_path, augment=0.0, workers=0), Charset(), log=logged.append
  )
  assert not np.array_equal(plain.batch(0)["images"], whole[0]["images"])
  np.testing.assert_array_equal(plain.batch(0)["labels"], whole[0]["labels"])
  widths = {b["images"].shape[2] for b in whole}
  assert widths <= {64, 128} and all(
      (b["widths"] <= b["images"].shape[2]).all() and (b["widths"] > 0).all() for b in whole
  )


@pytest.mark.real_data
def test_an_unusable_member_is_an_error_naming_it(tmp_path):
  (tmp_path / "labels.tsv").write_text("missing.png\tword\n")
  config = _config(tmp_path, workers=0)
  config.data.train = f"synth:inf @ 1 | tsv:{tmp_path} @ 1"
  with pytest.raises(ValueError, match=f"member 'tsv:{tmp_path}' has no usable example"):
    inputs.train_loader(config, Charset(), log=lambda _: None)
