"""Tests for crnn_jax.finetune: what init_from keeps, re-initialises and resets, and a
charset-changing fine-tuning run on licence plates with a held-out split."""

import jax
import numpy as np
import pytest
import tiny_model

from crnn_jax import checkpoints, finetune, loading, train


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A checkpoint of the tiny model with the default 62-character charset."""
  return tiny_model.save_checkpoint(
      str(tmp_path_factory.mktemp("source")), tiny_model.config(), seed=0
  )


def used_state(cfg):
  """A fresh state, then made to look used (step and optimiser moments non-zero)."""
  state, charset = tiny_model.make_state(cfg, seed=1)
  bump = lambda x: x + np.ones((), x.dtype)  # noqa: E731  (keeps sharding)
  return (
      state.replace(step=bump(state.step), opt_state=jax.tree.map(bump, state.opt_state)),
      charset,
  )


def leaves_equal(a, b):
  """Same tree structure (names and nesting), and every pair of leaves equal."""
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def test_new_charset_reinitialises_only_the_output_layer(source):
  """Breaks if init_from keeps the fresh run's BatchNorm statistics (or parameters) instead
  of the checkpoint's (the two states' statistics are random and differ, not both 0/1), if
  it keeps the checkpoint's 63-way output layer, or if the optimiser state or step carry on.
  """
  cfg = tiny_model.config(**{"model.charset": tiny_model.UPPER_DIGITS})
  state, charset = used_state(cfg)
  logs = []
  new = finetune.init_from(state, source, charset, log=logs.append)
  saved = loading.load_checkpoint(source).variables

  assert set(new.params) == {"cnn", "bilstm1", "classifier"}
  # The comparisons below could not fail if the fresh and saved values were equal.
  assert not leaves_equal(state.batch_stats, saved["batch_stats"])
  assert not leaves_equal(state.params["cnn"], saved["params"]["cnn"])
  for name in ("cnn", "bilstm1"):
    assert leaves_equal(new.params[name], saved["params"][name]), name
  assert leaves_equal(new.batch_stats, saved["batch_stats"])
  assert leaves_equal(new.params["classifier"], state.params["classifier"])  # the fresh one
  assert new.params["classifier"]["kernel"].shape == (32, 37)  # 36 characters + blank
  assert int(new.step) == 0
  assert leaves_equal(new.opt_state, state.tx.init(new.params))  # fresh: zeros
  # Same placement as the state given (replicated over the mesh, as training holds it).
  for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
    assert after.sharding == before.sharding

  report = "\n".join(logs)
  assert "re-initialised" in report and "62 characters" in report and "36" in report
  assert "step 0" in report


def test_same_charset_keeps_the_output_layer(source):
  state, charset = used_state(tiny_model.config())
  logs = []
  new = finetune.init_from(state, source, charset, log=logs.append)
  saved = loading.load_checkpoint(source).variables
  assert leaves_equal(new.params, saved["params"])
  assert "kept" in logs[-1] and "re-initialised" not in "\n".join(logs)


def test_other_model_is_a_clear_error(source):
  state, charset = tiny_model.make_state(tiny_model.config(**{"model.lstm_hidden": 24}))
  with pytest.raises(ValueError, match="lstm_hidden") as e:
    finetune.init_from(state, source, charset)
  assert "bilstm1" in str(e.value)
  with pytest.raises(ValueError, match="No crnn_jax checkpoint"):
    finetune.init_from(state, source + "/nowhere", charset)


def plates_split(folder, n_train, n_test, seed=0):
  """A held-out split of plates_us: disjoint random train and test lines."""
  lines = tiny_model.read_labels("plates_us")
  order = np.random.default_rng(seed).permutation(len(lines))
  train_lines = [lines[i] for i in order[:n_train]]
  test_lines = [lines[i] for i in order[n_train : n_train + n_test]]
  assert not {p for p, _ in train_lines} & {p for p, _ in test_lines}
  return (
      tiny_model.write_tsv(f"{folder}/train", "plates_us", train_lines),
      tiny_model.write_tsv(f"{folder}/test", "plates_us", test_lines),
  )


@pytest.mark.real_data
def test_finetune_run_on_plates_with_new_charset(source, tmp_path, capsys):
  """--config.init_from through train_and_evaluate: upper case + digits, held-out eval."""
  train_spec, test_spec = plates_split(str(tmp_path), n_train=16, n_test=12)
  cfg = tiny_model.config(
      **{
          "model.charset": tiny_model.UPPER_DIGITS,
          "init_from": source,
          "data.train": train_spec,
          "data.eval": test_spec,
          "data.width_buckets": (64,),
          "train.num_steps": 1,
          "eval.every_steps": 1,
      }
  )
  result = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "re-initialised" in out and f"init_from {source}" in out
  assert result["n"] == 12
  # The new run's checkpoint holds the new charset and its 37-way output layer.
  manager, step = checkpoints.open_checkpoint(str(tmp_path / "run"))
  meta = checkpoints.read_meta(manager, step)
  assert step == 1 and meta["charset"] == tiny_model.UPPER_DIGITS
  assert meta["param_shapes"]["classifier/kernel"] == [32, 37]
