"""Tests for crnn_jax.checkpoints that need no training run: which checkpoint the best/
manager keeps, and that loaders take it by default while resuming takes the latest."""

import jax
import numpy as np
import tiny_model

from crnn_jax import checkpoints, loading, train


def test_best_checkpoint_is_kept_and_loaded_by_default(tmp_path):
  """Evaluations at steps 2, 4, 6 with word accuracy 0.5, 0.7, 0.6 and the latest
  checkpoint at step 6: best/ keeps step 4 only, a workdir given to the inference loader
  means that checkpoint, a resume restores the latest (step 6), and a re-evaluated step
  replaces its entry.

  Breaks if best/ keeps the latest or the lowest instead of the highest accuracy, keeps
  more than one step, if the loaders prefer checkpoints/ over best/, or if resuming
  starts from best/ (it would go back to step 4).
  """
  config = tiny_model.config()
  base, charset = tiny_model.make_state(config)
  meta = train._meta(config, charset, base)
  workdir = str(tmp_path / "run")

  def state_at(step):  # a state told apart by its classifier bias and step
    bias = base.params["classifier"]["bias"]
    params = dict(
        base.params, classifier=dict(base.params["classifier"], bias=bias + np.float32(step))
    )
    return base.replace(step=jax.device_put(np.int32(step), base.step.sharding), params=params)

  ckpts = checkpoints.Checkpoints(workdir)
  for step, acc in ((2, 0.5), (4, 0.7), (6, 0.6)):
    ckpts.save_best(step, state_at(step), meta, {"word_acc": acc})
  ckpts.save(6, state_at(6), meta, force=True)
  ckpts.wait()
  assert ckpts.best.all_steps() == [4] and ckpts.latest.all_steps() == [6]
  restored, step = ckpts.restore_intact(base, log=print)
  assert step == 6 and int(restored.step) == 6

  loaded = loading.load_checkpoint(workdir)
  assert loaded.step == 4 and "best" in loaded.where
  np.testing.assert_array_equal(
      loaded.variables["params"]["classifier"]["bias"], state_at(4).params["classifier"]["bias"]
  )
  # A folder of latest checkpoints, named explicitly, gives its latest.
  assert loading.load_checkpoint(f"{workdir}/checkpoints").step == 6

  # After a resume from step 2, step 4 is evaluated again: its new entry replaces the old.
  ckpts.save_best(4, state_at(40), meta, {"word_acc": 0.8})
  ckpts.wait()
  assert ckpts.best.all_steps() == [4]
  np.testing.assert_array_equal(
      loading.load_checkpoint(workdir).variables["params"]["classifier"]["bias"],
      state_at(40).params["classifier"]["bias"],
  )
  ckpts.close()
