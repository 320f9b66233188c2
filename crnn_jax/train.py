"""Training and evaluation: the train state, the jitted steps, and the loop around them.

``train_step`` and ``eval_step`` are pure functions of (state, batch[, rng]).
``train_and_evaluate`` jits them once over a mesh of every device (batch split on
``data``, state replicated, state donated), feeds them from the data pipeline
through a bounded prefetch onto the devices (``crnn_jax.prefetch``), and handles
progress (with the share of time spent waiting for data), evaluation, TensorBoard,
checkpoints and resumption.
"""

from __future__ import annotations

import datetime
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from crnn_jax import charset as charset_lib
from crnn_jax import checkpoints as ckpt_lib
from crnn_jax import decode as decode_lib
from crnn_jax import distributed, finetune, inputs, losses, metrics, models, nonfinite, prefetch
from crnn_jax import sharding
from crnn_jax.data import batching


class TrainState(train_state.TrainState):
  """Step, parameters, optimiser state and BatchNorm statistics."""

  batch_stats: Any = None


def make_charset(config: ml_collections.ConfigDict) -> charset_lib.Charset:
  return charset_lib.Charset.from_spec(config.model.charset, case_fold=config.model.case_fold)


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  o, steps = config.optim, config.train.num_steps
  if o.schedule == "constant":
    if o.warmup_steps:
      return optax.join_schedules(
          [
              optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps),
              optax.constant_schedule(o.learning_rate),
          ],
          [o.warmup_steps],
      )
    return optax.constant_schedule(o.learning_rate)
  if o.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0,
        o.learning_rate,
        o.warmup_steps,
        max(steps, o.warmup_steps + 1),
        end_value=o.learning_rate * o.end_lr_fraction,
    )
  raise ValueError(f"optim.schedule {o.schedule!r} is not one of 'constant', 'cosine'.")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optim
  schedule = make_schedule(config)
  if o.name == "adam":
    tx = optax.adam(schedule)
  elif o.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=o.weight_decay)
  elif o.name == "rmsprop":
    tx = optax.rmsprop(schedule)
  else:
    raise ValueError(f"optim.name {o.name!r} is not one of 'adam', 'adamw', 'rmsprop'.")
  if o.grad_clip_norm and o.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), tx)
  return tx


def create_train_state(
    config: ml_collections.ConfigDict, model: models.CRNN, rng: jax.Array
) -> TrainState:
  """A fresh state; parameters do not depend on the input width."""
  width = min(config.data.width_buckets)
  variables = model.init(
      {"params": rng},
      jnp.zeros((1, config.model.height, width, 1)),
      jnp.full((1,), width),
      train=False,
  )
  return TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      tx=make_optimizer(config),
  )


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, blank_id: int = 0):
  """One optimisation step.

  Args:
    state: the train state.
    batch: ``images (B, H, W) uint8``, ``widths (B,)``, ``labels (B, L)``,
      ``label_paddings (B, L)`` (1.0 = padded).
    rng: base key; the step is folded in, so every step differs.

  Returns:
    (new state, metrics dict of scalars: loss, num_infeasible, grad_norm, nonfinite).
    A step whose loss or gradient norm is not finite is skipped: parameters,
    optimiser state and BatchNorm statistics stay as they were, only ``step``
    advances (so the data position and checkpoint numbers keep following the
    loop), and ``nonfinite`` is 1.
  """
  rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    (logits, logit_paddings), updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        batch["images"],
        batch["widths"],
        train=True,
        rngs={"dropout": rng},
        mutable=["batch_stats"],
    )
    loss, aux = losses.ctc_loss(
        logits, logit_paddings, batch["labels"], batch["label_paddings"], blank_id=blank_id
    )
    return loss, (aux, updates)

  (loss, (aux, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # A branch, not jnp.where over the trees: the skipped update is never computed and
  # the kept state is the donated buffers, so the guard costs one scalar test.
  state = jax.lax.cond(
      finite,
      lambda s: s.apply_gradients(grads=grads, batch_stats=updates["batch_stats"]),
      lambda s: s.replace(step=s.step + 1),
      state,
  )
  return state, {
      "loss": loss,
      "num_infeasible": aux["num_infeasible"],
      "grad_norm": grad_norm,
      "nonfinite": (~finite).astype(jnp.int32),
  }


def eval_step(state: TrainState, batch: dict, *, blank_id: int = 0) -> dict:
  """Forward pass in inference mode, decoded greedily as the Recognizer decodes.

  Returns:
    ``tokens (B, T)`` label ids padded with -1 and ``lengths (B,)``
    (``decode.greedy_decode``), ``confidence (B,)`` (probability of the best path), and
    ``loss_sum``/``loss_count`` over rows whose ``mask`` is 1 and whose label can be
    aligned.
  """
  logits, logit_paddings = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats},
      batch["images"],
      batch["widths"],
      train=False,
  )
  mask = batch.get("mask", jnp.ones(logits.shape[:1]))
  _, aux = losses.ctc_loss(
      logits,
      logit_paddings,
      batch["labels"],
      batch["label_paddings"],
      blank_id=blank_id,
      example_mask=mask,
  )
  greedy = decode_lib.greedy_decode(logits, logit_paddings, blank_id=blank_id)
  return {
      "tokens": greedy.tokens,
      "lengths": greedy.lengths,
      "confidence": jnp.exp(greedy.scores),
      "loss_sum": aux["per_example"].sum(),
      "loss_count": aux["num_usable"],
  }


# ----------------------------------------------------------------------------
# The loop.


def _log(msg: str):
  if jax.process_index() == 0:
    print(msg, flush=True)


def validate_config(config: ml_collections.ConfigDict, mesh) -> None:
  """Checks derived constraints once, raising ValueError that says what to change."""
  sharding.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
  sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  for name in ("num_steps", "log_every_steps", "max_nonfinite_steps"):
    if config.train[name] < 1:
      raise ValueError(f"train.{name} must be at least 1; got {config.train[name]}.")
  for group in ("eval", "checkpoint"):
    if config[group].every_steps < 1:
      raise ValueError(f"{group}.every_steps must be at least 1; got {config[group].every_steps}.")
  if config.data.device_prefetch < 0:
    raise ValueError(
        f"data.device_prefetch must be at least 0; got " f"{config.data.device_prefetch}."
    )


class _StopRequested:
  """Turns SIGTERM and the first Ctrl-C into a flag the loop checks between steps."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.signum = signum
    # Printed by the process that got it (the others say nothing until they stop with it).
    who = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
    print(
        f"\n{who}{signal.Signals(signum).name} received: saving a checkpoint, then "
        f"stopping (Ctrl-C again to abort without saving).",
        flush=True,
    )

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _meta(config, charset, state) -> dict:
  return {
      "model": {
          k: (list(v) if isinstance(v, tuple) else v) for k, v in config.model.to_dict().items()
      },
      "charset": charset.chars,
      "case_fold": charset.case_fold,
      "data": {
          "width_buckets": list(config.data.width_buckets),
          "resize_mode": config.data.resize_mode,
      },
      "param_shapes": ckpt_lib.param_shapes(state.params),
  }


def _device_batches(
    batches: Callable, start: int, stop: int, mesh, size: int
) -> prefetch.DevicePrefetch:
  """The global batches of steps ``start ... stop - 1``, ``size`` placed ahead."""

  def host_batches():
    if start >= stop:
      return  # nothing to read, and no worker process to start
    it = batches(start)  # worker processes start preparing batches here
    try:
      for step in range(start, stop):
        yield nonfinite.poison_for_test(next(it), step + 1)
    finally:
      it.close()

  return prefetch.DevicePrefetch(
      host_batches(), functools.partial(sharding.to_global, mesh=mesh), size
  )


def evaluate(
    eval_fn: Callable,
    state: TrainState,
    eval_set: inputs.EvalSet,
    charset: charset_lib.Charset,
    mesh,
    global_batch: int,
    height: int,
    num_samples: int = 0,
) -> tuple[dict, list]:
  """Greedy-decoded metrics over every example of one evaluation set (all processes together).

  Returns:
    (metrics dict from ``metrics.summarize`` plus ``loss``, samples list of
    (image uint8 (H, W), truth, prediction) from this process).
  """
  per_host = global_batch // jax.process_count()
  idx = eval_set.index
  counts = sharding.allgather([-(-len(m) // per_host) for m in idx.members]).max(axis=0)
  total = np.zeros(len(metrics.FIELDS))
  loss_sum, loss_count, samples = 0.0, 0, []
  for host_batch, texts, _ in batching.eval_batches(idx, per_host, height, counts):
    out = eval_fn(state, sharding.to_global(host_batch, mesh))
    n = len(texts)
    tokens = sharding.local_rows(out["tokens"])[:n]
    lengths = sharding.local_rows(out["lengths"])[:n]
    conf = sharding.local_rows(out["confidence"])[:n]
    preds = decode_lib.to_strings(tokens, lengths, charset)
    truths = [charset.normalize(t) for t in texts]
    total += metrics.sums(truths, preds, conf)
    loss_sum += float(out["loss_sum"])
    loss_count += int(out["loss_count"])
    for k in range(min(num_samples - len(samples), len(texts))):
      w = int(host_batch["widths"][k])
      samples.append((host_batch["images"][k, :, :w], truths[k], preds[k]))
  total = sharding.allgather(total).sum(axis=0)
  result = metrics.summarize(total)
  result["loss"] = loss_sum / max(loss_count, 1)
  return result, samples


def select_best(results: dict, best_set: str) -> float:
  """The number the best checkpoint is chosen by: word accuracy of ``best_set``, or
  (``'mean'``) the mean word accuracy of every evaluation set.

  Raises:
    ValueError: if ``best_set`` names no evaluation set.
  """
  if best_set == "mean":
    return float(np.mean([r["word_acc"] for r in results.values()]))
  if best_set not in results:
    raise ValueError(
        f"eval.best_set {best_set!r} is not 'mean' nor one of the evaluation "
        f"sets {sorted(results)}."
    )
  return float(results[best_set]["word_acc"])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if any.

  Returns:
    the final evaluation metrics.
  """
  from crnn_jax import report  # TensorBoard writer and images; process 0 only.

  mesh = sharding.make_mesh()
  validate_config(config, mesh)
  charset = make_charset(config)
  model = models.from_config(config.model, charset.num_classes)
  _log(
      f"devices: {jax.device_count()} x {jax.devices()[0].platform} over "
      f"{jax.process_count()} process(es); charset: {len(charset)} characters + blank; "
      f"computing in {jnp.dtype(model.dtype).name} (model.compute_dtype="
      f"{config.model.compute_dtype!r}), parameters in float32"
  )

  eval_sets = inputs.EvalSets(config, charset, log=_log)  # prepared in the background
  batches = inputs.train_loader(config, charset, log=_log)

  rng = jax.random.key(config.train.seed)
  init_rng, step_rng = jax.random.split(rng)
  repl = sharding.replicated(mesh)
  state = jax.jit(functools.partial(create_train_state, config, model), out_shardings=repl)(
      init_rng
  )
  _log(
      "model parameters:\n"
      + models.param_summary({"params": state.params, "batch_stats": state.batch_stats})
  )

  os.makedirs(workdir, exist_ok=True)
  ckpts = ckpt_lib.Checkpoints(workdir, max_to_keep=config.checkpoint.max_to_keep)
  state, start = ckpts.restore_intact(state, log=_log)
  if start is not None:
    _log(
        f"Resuming from the checkpoint at step {start} in {workdir} "
        f"(parameters, optimiser state, data position)."
    )
  else:
    start = 0
    if config.init_from:
      state = finetune.init_from(state, config.init_from, charset, log=_log)
  meta = _meta(config, charset, state)

  batch_sharding = sharding.batch_sharded(mesh)
  p_train = jax.jit(
      functools.partial(train_step, blank_id=charset_lib.BLANK_ID),
      in_shardings=(repl, batch_sharding, repl),
      out_shardings=(repl, repl),
      donate_argnums=0,
  )
  p_eval = jax.jit(
      functools.partial(eval_step, blank_id=charset_lib.BLANK_ID),
      in_shardings=(repl, batch_sharding),
      out_shardings={
          "tokens": batch_sharding,
          "lengths": batch_sharding,
          "confidence": batch_sharding,
          "loss_sum": repl,
          "loss_count": repl,
      },
  )
  writer = report.Writer(workdir) if jax.process_index() == 0 else None

  num_steps = config.train.num_steps
  result = {}
  step, stopping = start, False
  skips = nonfinite.Streak(config.train.max_nonfinite_steps)
  with _StopRequested() as stop:
    t_log, n_log = time.time(), 0
    t_start = time.time()
    member_names = inputs.member_names([f.source.spec for f in batches.feeds])
    member_rows = np.zeros(len(member_names))
    train_iter = _device_batches(batches, start, num_steps, mesh, config.data.device_prefetch)
    wait_log = 0.0
    for step in range(start, num_steps):
      state, m = p_train(state, next(train_iter), step_rng)
      n_log += config.train.batch_size
      if writer:
        member_rows += batches.member_counts(step)
      done = step + 1
      log_now = done % config.train.log_every_steps == 0 or done == num_steps or done == start + 1
      if skips.add(done, m["nonfinite"], read_all=log_now):
        train_iter.close()
        ckpts.wait()
        raise skips.error(ckpts.latest_step())
      if log_now:
        m = jax.device_get(m)
        dt = time.time() - t_log
        ips = n_log / max(dt, 1e-9)
        # Share of the interval the loop waited for a batch: the device starved.
        data_wait = (train_iter.wait_seconds - wait_log) / max(dt, 1e-9)
        eta = (num_steps - done) * config.train.batch_size / max(ips, 1e-9)
        lr = float(make_schedule(config)(done))
        _log(
            f"step {done}/{num_steps}  loss {m['loss']:.4f}  images/s {ips:.1f}  "
            f"data_wait {data_wait:.0%}  ETA {_hms(eta)}  lr {lr:.2e}  "
            f"masked {int(m['num_infeasible'])}"
            + (f"  skipped {skips.total} non-finite" if skips.total else "")
            + ("  (includes compile)" if done == start + 1 else "")
        )
        if writer:
          shares = member_rows / max(member_rows.sum(), 1)
          writer.scalars(
              done,
              {
                  "train/loss": m["loss"],
                  "train/learning_rate": lr,
                  "train/masked_examples": m["num_infeasible"],
                  "train/grad_norm": m["grad_norm"],
                  "train/images_per_s": ips,
                  "train/data_wait_fraction": data_wait,
                  "train/nonfinite_steps": skips.total,
                  **{f"train/share/{n}": v for n, v in zip(member_names, shares)},
              },
          )
        member_rows = np.zeros(len(member_names))
        t_log, n_log, wait_log = time.time(), 0, train_iter.wait_seconds
      last = done == num_steps
      if done % config.eval.every_steps == 0 or last:
        results, samples = {}, []
        for eval_set in eval_sets.get():
          r, s = evaluate(
              p_eval,
              state,
              eval_set,
              charset,
              mesh,
              config.eval.batch_size,
              config.model.height,
              config.eval.num_samples,
          )
          results[eval_set.name] = r
          samples = samples or s
          _log(
              f"eval at step {done} [{eval_set.name}]: word_acc {r['word_acc']:.4f}  "
              f"word_acc_ci {r['word_acc_ci']:.4f}  cer {r['cer']:.4f}  "
              f"loss {r['loss']:.4f}  (n={r['n']})"
          )
          hint = metrics.empty_hint(r)
          if hint:
            _log("note: " + hint)
          if writer:
            prefix = "eval" if len(eval_sets.names) == 1 else f"eval/{eval_set.name}"
            writer.scalars(done, {f"{prefix}/{k}": v for k, v in r.items() if k != "n"})
        selected = select_best(results, config.eval.best_set)
        if len(results) > 1:
          _log(
              f"eval at step {done}: best-checkpoint metric ({config.eval.best_set} word "
              f"accuracy) {selected:.4f}"
          )
        result = dict(results[eval_sets.names[0]], sets=results)
        if writer:
          writer.scalars(done, {"eval/selected_word_acc": selected})
          writer.samples(done, samples)
        ckpts.save_best(done, state, meta, {"word_acc": selected})
        t_log, n_log, wait_log = time.time(), 0, train_iter.wait_seconds
      # Every process stops after the same step, whichever got the signal.
      stopping = distributed.any_process(stop.signum is not None)
      if done % config.checkpoint.every_steps == 0 or last or stopping:
        ckpts.save(done, state, meta, force=True)
      if stopping:
        train_iter.close()
        ckpts.wait()
        _log(
            f"Stopped at step {done}; checkpoint saved in {workdir}. Run the same command "
            f"to resume."
        )
        break
    else:
      if start >= num_steps:
        _log(
            f"Nothing to do: the checkpoint in {workdir} is at step {start} >= "
            f"train.num_steps={num_steps}."
        )
  train_iter.close()
  ckpts.wait()
  ckpts.close()
  if jax.process_count() > 1:
    # Every process prints what it holds, so diverged replicas would show.
    print(
        f"process {jax.process_index()}: step {int(state.step)}, parameter checksum "
        f"{params_checksum(state.params)}",
        flush=True,
    )
  if writer:
    writer.close()
  if result and not stopping:
    _log(f"Finished {num_steps} steps in {_hms(time.time() - t_start)}.")
    for name, r in result["sets"].items():
      _log(
          f"Validation [{name}] (n={r['n']}): word accuracy {r['word_acc']:.4f}, "
          f"case-insensitive {r['word_acc_ci']:.4f}, CER {r['cer']:.4f}."
      )
    _log("Sample predictions (truth -> prediction):")
    for _, truth, pred in samples[: config.eval.num_samples]:
      _log(f"  {'ok ' if truth == pred else 'ERR'} {truth!r:>24} -> {pred!r}")
  return result


def params_checksum(params) -> str:
  """SHA-256 (16 hex digits) of this process's copy of the parameters."""
  import hashlib

  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    h.update(np.asarray(leaf.addressable_data(0)).tobytes())
  return h.hexdigest()[:16]


def _hms(seconds: float) -> str:
  """'1:59:42' (whole seconds; '1 day, 2:03:04' past a day), as datetime prints durations."""
  return str(datetime.timedelta(seconds=int(max(seconds, 0))))
