"""Faults a training run meets, shown with real processes and real files (docs/reliability.md).

Damaged and half-written checkpoints, a SIGTERM reaching one process of two, and steps
whose loss is not finite. Each test's docstring says what breaking the code looks like.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tiny_model
from helpers import REPO, tiny_config
from test_multihost import _free_port, _kill_all, _launch, _overrides

from crnn_jax import checkpoints, finetune, models, nonfinite, recognizer, sharding, train

# The tests here build on helpers.tiny_config, which trains on the real word crops.
pytestmark = pytest.mark.real_data


def _flip_bytes(step_dir: str, files: str = "ocdbt.process_*/d/*") -> list:
  """Inverts 64 bytes in the middle of each of a checkpoint step's data files.

  ``ocdbt.process_*/d/*`` (the default) hold the array data, which Orbax does not
  checksum; ``d/*`` holds the merged OCDBT b-tree, whose nodes it does.
  """
  files = sorted(glob.glob(os.path.join(step_dir, "state", files)))
  assert files, f"no data files under {step_dir}"
  for path in files:
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      chunk = f.read(64)
      f.seek(-len(chunk), os.SEEK_CUR)
      f.write(bytes(b ^ 0xFF for b in chunk))
  return files


def _config(**overrides):
  """tiny_config with LSTMs wide enough that Orbax keeps their kernels in data files.

  With 8 hidden units every array is small enough to be inlined into the OCDBT b-tree,
  which Orbax checksums, and flipped bytes there are caught without a digest.
  """
  return tiny_config(**{"model.lstm_hidden": 64, **overrides})


def _all_finite(tree) -> bool:
  return all(
      bool(np.isfinite(np.asarray(x)).all())
      for x in jax.tree.leaves(tree)
      if np.issubdtype(np.asarray(x).dtype, np.floating)
  )


def _restore(workdir, config, step):
  mesh = sharding.make_mesh()
  charset = train.make_charset(config)
  model = models.from_config(config.model, charset.num_classes)
  template = jax.jit(
      lambda r: train.create_train_state(config, model, r), out_shardings=sharding.replicated(mesh)
  )(jax.random.key(0))
  ckpts = checkpoints.Checkpoints(workdir)
  try:
    return ckpts.restore(template, step)[0]
  finally:
    ckpts.close()


def test_corrupt_checkpoint_is_refused_and_resume_falls_back(tmp_path, capsys):
  """Flipped bytes in the latest checkpoint's array data (Orbax reads them without error).

  Broken looks like: without the digests, evaluate.py exits 0 and prints a table from
  garbage weights, and the resume prints "Resuming from the checkpoint at step 4"; with
  the fallback gone, the resume raises instead of using step 2; without setting the bad
  step aside, the save of step 4 fails with Orbax's StepAlreadyExistsError.
  """
  workdir = str(tmp_path / "run")
  config = _config(**{"train.num_steps": 4, "checkpoint.every_steps": 2, "eval.every_steps": 4})
  train.train_and_evaluate(config, workdir)
  capsys.readouterr()
  flipped = _flip_bytes(os.path.join(workdir, "checkpoints", "4"))
  _flip_bytes(os.path.join(workdir, "best", "4"))
  print(f"flipped 64 bytes in {len(flipped)} data file(s) of checkpoints/4 and best/4")

  # evaluate.py: one line on stderr, no traceback, non-zero exit.
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(REPO, "scripts", "evaluate.py"),
          "--workdir",
          workdir,
          "--data",
          config.data.eval,
      ],
      capture_output=True,
      text=True,
      cwd=REPO,
      check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
      timeout=180,
  )
  print("evaluate.py exit", proc.returncode, "stderr:", proc.stderr.strip()[-600:])
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stderr
  # Usually the digests catch it ("is corrupt: data of <leaf> ..."); when the flipped
  # bytes land on a compressed chunk's header, TensorStore cannot decode it ("cannot be
  # read"). Either way the checkpoint is named and refused.
  assert re.search(
      r"^error: Checkpoint .*best/4 (is corrupt: data of \S+|cannot be read)",
      proc.stderr,
      re.MULTILINE,
  )

  # The inference and fine-tuning loaders refuse it the same way.
  with pytest.raises(checkpoints.CheckpointError, match=r"checkpoints/4 (is corrupt|cannot be)"):
    recognizer.load_checkpoint(os.path.join(workdir, "checkpoints", "4"))
  state, charset = tiny_model.make_state(config)
  with pytest.raises(checkpoints.CheckpointError, match=r"best/4 (is corrupt|cannot be)"):
    finetune.init_from(state, workdir, charset, log=print)

  # The resume warns, sets step 4 aside and continues from step 2 to the end.
  config.train.num_steps = 6
  train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  print("\n".join(line for line in out.splitlines() if "warning" in line or "Resum" in line))
  assert re.search(
      r"warning: Checkpoint .*checkpoints/4 (is corrupt: data of |cannot be read)", out
  )
  assert "trying the checkpoint at step 2" in out
  assert "Resuming from the checkpoint at step 2" in out and "step 3/6" in out
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "4.corrupt", "6"]
  assert int(_restore(workdir, config, 6).step) == 6  # the new checkpoints verify


def test_nothing_intact_is_a_clear_error(tmp_path):
  """Two checkpoints: one whose arrays were swapped for other valid ones, one with a damaged index.

  Step 1's ``state/`` folder is replaced by that of a checkpoint whose classifier bias
  differs, so Orbax reads well-formed arrays (what flipped bytes in raw float data look
  like to it) and only the digests can tell. Step 2's OCDBT b-tree node has flipped
  bytes, which Orbax's own CRC catches. Broken looks like: a resume from step 1's wrong
  weights, an Orbax traceback (DATA_LOSS) instead of a fallback from step 2, or training
  silently starting afresh when nothing is intact.
  """
  workdir = str(tmp_path / "run")
  config = _config()
  tiny_model.save_checkpoint(workdir, config, step=1)
  tiny_model.save_checkpoint(workdir, config, step=2)
  state = tiny_model.make_state(config)[0]
  other = state.replace(
      params={
          **state.params,
          "classifier": jax.tree.map(lambda x: x + 1, state.params["classifier"]),
      }
  )
  ckpts = checkpoints.Checkpoints(str(tmp_path / "other"))
  ckpts.save(1, other, train._meta(config, train.make_charset(config), other), force=True)
  ckpts.close()
  shutil.rmtree(os.path.join(workdir, "checkpoints", "1", "state"))
  shutil.copytree(
      str(tmp_path / "other" / "checkpoints" / "1" / "state"),
      os.path.join(workdir, "checkpoints", "1", "state"),
  )
  _flip_bytes(os.path.join(workdir, "checkpoints", "2"), files="d/*")

  ckpts = checkpoints.Checkpoints(workdir)
  logs = []
  with pytest.raises(
      checkpoints.CheckpointError, match=r"None of the 2 checkpoints .* is intact.*new --workdir"
  ) as e:
    ckpts.restore_intact(state, log=logs.append)
  ckpts.close()
  print("\n".join(logs + [str(e.value)]))
  log = "\n".join(logs)
  assert re.search(r"checkpoints/2 cannot be read \(.*DATA_LOSS", log)
  assert "trying the checkpoint at step 1" in log
  assert re.search(
      r"checkpoints/1 is corrupt: data of params/classifier/bias, "
      r"params/classifier/kernel \(2 of \d+ arrays\) differ from the digests",
      log,
  )
  assert "no older checkpoint is left" in log
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1.corrupt", "2.corrupt"]


def test_killed_while_saving_resumes_from_the_last_complete_checkpoint(tmp_path, capsys):
  """SIGKILL during the write of checkpoint 4, then the same command again.

  Method: the test hook CRNN_JAX_TEST_PAUSE_BEFORE_COMMIT=4 makes the save of step 4
  print a line and wait after its files are written, before Orbax commits them by
  renaming the temporary folder; the test kills the process (SIGKILL) on that line, so
  the kill lands mid-save every time. Broken looks like: the relaunch resuming from step
  4 (a half-written checkpoint listed as a step) or failing to read it, or the
  temporary folder staying behind.
  """
  workdir = tmp_path / "run"
  config = tiny_config(
      **{"train.num_steps": 6, "checkpoint.every_steps": 2, "eval.every_steps": 1000}
  )
  cmd = [
      sys.executable,
      "-u",
      os.path.join(REPO, "scripts", "train.py"),
      "--config",
      os.path.join(REPO, "configs", "base.py"),
      f"--workdir={workdir}",
      "--num-cpu-devices=8",
      *_overrides(config, 6),
  ]
  env = dict(
      os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **{checkpoints.PAUSE_BEFORE_COMMIT_ENV: "4"}
  )
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(
      cmd,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=env,
      cwd=REPO,
      start_new_session=True,
  )
  lines = []
  try:
    deadline = time.time() + 240
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("test hook: checkpoint 4 written"):
        break
      assert time.time() < deadline, "".join(lines)
    pending = os.listdir(workdir / "checkpoints")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    _kill_all([proc])
  print(f"killed mid-save; checkpoints/ held {sorted(pending)}")
  assert "2" in pending and "4" not in pending
  assert any(p.startswith("4.orbax-checkpoint-tmp") for p in pending), pending

  # The same command again, run in this process (the same config, one start-up less).
  train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  print("\n".join(line for line in out.splitlines() if line.startswith(("Resum", "step"))))
  assert "Resuming from the checkpoint at step 2" in out
  assert "step 3/6" in out and "step 1/6" not in out
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  """Two processes x 2 CPU devices; SIGTERM reaches process 1 only.

  Broken looks like (the local stop flag of before): process 1 saves alone and waits in
  the save's barrier while process 0 waits in the next step's collective, until the
  heartbeat timeout kills both with a non-zero status; or the two stop at different
  steps (different "step N" in their last lines).
  """
  config = tiny_config(
      **{"train.log_every_steps": 1, "checkpoint.every_steps": 1000, "eval.every_steps": 100000}
  )
  config.model.conv_impl = "xla"
  workdir = tmp_path / "pod"
  procs = _launch(workdir, _overrides(config, 100000), _free_port())
  outs = ["", ""]
  try:
    deadline = time.time() + 240
    for line in procs[0].stdout:
      outs[0] += line
      if line.startswith("step 3/"):
        break
      assert time.time() < deadline, outs[0]
    os.kill(procs[1].pid, signal.SIGTERM)
    signalled = time.time()
    for i, p in enumerate(procs):
      outs[i] += p.communicate(timeout=120)[0]  # bound: generous, not a timing claim
    took = time.time() - signalled
  finally:
    _kill_all(procs)
  finals = [re.search(r"process (\d): step (\d+), parameter checksum (\w+)", o) for o in outs]
  print(
      f"both exited {[p.returncode for p in procs]} {took:.1f} s after SIGTERM to "
      f"process 1; last lines: {[f.group(0) if f else None for f in finals]}"
  )
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "process 1: SIGTERM received" in outs[1]
  assert "process 0: SIGTERM" not in outs[0]
  (_, s0, c0), (_, s1, c1) = (f.groups() for f in finals)
  assert s0 == s1 and c0 == c1, (finals[0].group(0), finals[1].group(0))
  stop = int(s0)
  assert f"Stopped at step {stop}; checkpoint saved" in outs[0]
  assert sorted(os.listdir(workdir / "checkpoints")) == [str(stop)]

  # What was saved is what both held: the checkpoint restores to the same step and
  # parameters (their checksum). Resuming from a multi-process checkpoint, data position
  # included, is test_multihost's two-stage run; a relaunch here would repeat it.
  restored = _restore(str(workdir), config, stop)
  assert int(restored.step) == stop
  assert train.params_checksum(restored.params) == c0


def test_nonfinite_step_changes_nothing_but_the_step():
  """One jitted step on a batch of NaN images.

  Broken looks like: parameters, Adam moments or BatchNorm statistics turning NaN
  (the update applied), or ``nonfinite`` staying 0.
  """
  config = tiny_config()
  state = tiny_model.make_state(config)[0]
  before = jax.device_get(state)
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step = jax.jit(train.train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl))
  batch = {
      "images": np.full((16, 32, 64), np.nan, np.float32),
      "widths": np.full((16,), 64, np.int32),
      "labels": np.ones((16, 4), np.int32),
      "label_paddings": np.zeros((16, 4), np.float32),
  }
  after, m = jax.device_get(step(state, sharding.to_global(batch, mesh), jax.random.key(0)))
  assert int(m["nonfinite"]) == 1 and not np.isfinite(m["loss"])
  assert int(after.step) == int(before.step) + 1
  for name in ("params", "opt_state", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, getattr(after, name), getattr(before, name))


def test_nonfinite_steps_are_skipped_then_a_streak_stops_training(tmp_path, monkeypatch, capsys):
  """NaN images at steps 2 and 4-6 through the CRNN_JAX_TEST_NONFINITE_STEPS hook.

  One run: step 2 is skipped and counted, step 3 trains on, and the three in a row from
  step 4 (train.max_nonfinite_steps=3) stop it. Broken looks like: no "skipped 1
  non-finite" in the progress line or no train/nonfinite_steps in TensorBoard, a NaN
  loss at step 3 or NaN parameters in a checkpoint (the NaN update applied), or a run
  that goes on to step 8 (or stops without saying why).
  """
  monkeypatch.setenv(nonfinite.NONFINITE_STEPS_ENV, "2,4,5,6")
  workdir = str(tmp_path / "run")
  config = tiny_config(
      **{"train.num_steps": 8, "checkpoint.every_steps": 2, "train.max_nonfinite_steps": 3}
  )
  with pytest.raises(nonfinite.NonFiniteError) as e:
    train.train_and_evaluate(config, workdir)
  steps = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
  print("\n".join(steps) + "\nerror: " + str(e.value))
  # Step 6 ends the streak: the error comes before its progress line and its save.
  assert [line.split()[1] for line in steps] == ["1/8", "2/8", "3/8", "4/8", "5/8"]
  assert "skipped" not in steps[0] and steps[1].endswith("skipped 1 non-finite")
  assert "loss nan" in steps[1] and "loss nan" not in steps[2]
  assert steps[2].endswith("skipped 1 non-finite") and steps[4].endswith("skipped 3 non-finite")
  assert re.search(r"3 consecutive steps \(4 to 6\) had a non-finite loss", str(e.value))
  assert "optim.learning_rate" in str(e.value)
  events = glob.glob(os.path.join(workdir, "tensorboard", "events.out*"))
  assert any(b"train/nonfinite_steps" in Path(p).read_bytes() for p in events)
  saved = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert saved == ["2", "4"], saved
  for s in saved:
    assert _all_finite(_restore(workdir, config, int(s)))
