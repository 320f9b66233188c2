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
