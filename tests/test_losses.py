import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crnn_jax import losses


def _inputs(seed=0, b=6, t=8, k=5, l=4):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(b, t, k)), jnp.float32)
  labels = jnp.asarray(rng.integers(1, k, size=(b, l)), jnp.int32)
  label_paddings = np.zeros((b, l), np.float32)
  label_paddings[1, 2:] = 1
  logit_paddings = np.zeros((b, t), np.float32)
  logit_paddings[2, 5:] = 1
  return logits, jnp.asarray(logit_paddings), labels, jnp.asarray(label_paddings)


def test_required_frames_counts_repeats():
  labels = jnp.array([[1, 1, 2, 0], [3, 3, 3, 3], [1, 2, 1, 2]])
  pads = jnp.array([[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 1]], jnp.float32)
  assert losses.required_frames(labels, pads).tolist() == [4, 7, 2]


def _brute_force_nll(logits, frames, label, blank=0):
  """-log P(label) by summing the probabilities of every path of ``frames`` frames that
  collapses (merge repeats, drop blanks) to ``label``: K**frames paths."""
  logp = logits[:frames] - np.log(np.exp(logits[:frames]).sum(-1, keepdims=True))
  total = 0.0
  for path in itertools.product(range(logits.shape[-1]), repeat=frames):
    merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
    if [c for c in merged if c != blank] == list(label):
      total += np.exp(sum(logp[t, c] for t, c in enumerate(path)))
  return -np.log(total)


def test_equals_brute_force_enumeration_of_alignments():
  """Per-example losses equal -log of the summed probability of every alignment, counted
  path by path over 4**6 paths, with padded frames and labels, repeated labels (which
  need a blank between) and a label using every frame.

  Breaks if padded frames or label positions count, if repeats are merged without a
  blank (or blanks are not the blank_id), or if the loss is not a sum over alignments.
  """
  rng = np.random.default_rng(7)
  b, t, k = 5, 6, 4
  logits = rng.normal(size=(b, t, k)) * 2
  frames = [6, 4, 6, 5, 6]
  labels = [[1, 2], [3, 3], [1, 1, 2, 2], [2], [1, 2, 3, 1, 2, 3]]
  logit_paddings = (np.arange(t)[None] >= np.array(frames)[:, None]).astype(np.float32)
  width = max(map(len, labels))
  padded = np.array([lab + [1] * (width - len(lab)) for lab in labels], np.int32)
  label_paddings = np.arange(width)[None] >= np.array([len(x) for x in labels])[:, None]
  loss, aux = losses.ctc_loss(
      jnp.asarray(logits, jnp.float32), logit_paddings, padded, label_paddings.astype(np.float32)
  )
  want = [_brute_force_nll(logits[i], frames[i], labels[i]) for i in range(b)]
  assert int(aux["num_usable"]) == b
  np.testing.assert_allclose(aux["per_example"], want, rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(want), rtol=1e-5)
  # Blank as the last class: the same paths with the class axis rotated.
  rotated = np.roll(logits, -1, axis=-1)  # class c -> c - 1; blank 0 -> k - 1
  _, aux = losses.ctc_loss(
      jnp.asarray(rotated, jnp.float32),
      logit_paddings,
      padded - 1,
      label_paddings.astype(np.float32),
      blank_id=k - 1,
  )
  np.testing.assert_allclose(aux["per_example"], want, rtol=1e-5)


def test_equals_optax_on_feasible_pairs():
  logits, lp, labels, lab_p = _inputs()
  loss, aux = losses.ctc_loss(logits, lp, labels, lab_p)
  ref = optax.ctc_loss(logits, lp, labels, lab_p)
  assert int(aux["num_infeasible"]) == 0
  np.testing.assert_allclose(aux["per_example"], ref, rtol=1e-6)
  np.testing.assert_allclose(loss, ref.mean(), rtol=1e-6)


def test_infeasible_pairs_are_masked_and_counted():
  logits, lp, labels, lab_p = _inputs()
  # Example 0: 7 identical labels need 13 frames of 8. Example 2: 4 labels in 5 frames, fine.
  labels = labels.at[0].set(jnp.array([1, 1, 1, 1]))
  labels = jnp.concatenate([labels, jnp.ones((6, 3), jnp.int32)], axis=1)
  lab_p = jnp.concatenate([lab_p, jnp.ones((6, 3))], axis=1).at[0].set(0.0)
  loss, aux = losses.ctc_loss(logits, lp, labels, lab_p)
  ref = optax.ctc_loss(logits, lp, labels, lab_p)
  assert float(ref[0]) > 1e4  # what optax does with an impossible alignment
  assert int(aux["num_infeasible"]) == 1 and int(aux["num_usable"]) == 5
  assert float(aux["per_example"][0]) == 0.0
  np.testing.assert_allclose(loss, ref[1:].mean(), rtol=1e-6)


def test_example_mask_and_all_masked_gives_zero_not_nan():
  logits, lp, labels, lab_p = _inputs()
  loss, aux = losses.ctc_loss(logits, lp, labels, lab_p, example_mask=jnp.zeros(6))
  assert float(loss) == 0.0 and int(aux["num_infeasible"]) == 0


def test_no_negative_loss_and_gradients_finite_for_confident_model():
  # A model that is exactly right: loss ~0 (can round below 0 in float32).
  t, k = 6, 4
  labels = jnp.array([[1, 2, 3]])
  path = jnp.array([1, 0, 2, 0, 3, 0])
  logits = 60.0 * jax.nn.one_hot(path, k)[None]
  lp = jnp.zeros((1, t))
  loss, aux = losses.ctc_loss(logits, lp, labels, jnp.zeros((1, 3)))
  assert float(aux["per_example"][0]) >= 0.0
  g = jax.grad(lambda x: losses.ctc_loss(x, lp, labels, jnp.zeros((1, 3)))[0])(logits)
  assert np.isfinite(np.asarray(g)).all()


def test_bfloat16_logits_computed_in_float32():
  logits, lp, labels, lab_p = _inputs()
  l16, _ = losses.ctc_loss(logits.astype(jnp.bfloat16), lp, labels, lab_p)
  l32, _ = losses.ctc_loss(logits.astype(jnp.bfloat16).astype(jnp.float32), lp, labels, lab_p)
  assert l16.dtype == jnp.float32
  np.testing.assert_allclose(l16, l32, rtol=1e-6)
