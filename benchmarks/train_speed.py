"""Benchmark: crnn_jax training and inference speed against the same network in PyTorch.

Times, in one process and in alternating order (warm-up and compilation excluded):

- crnn_jax: ``crnn_jax.train.train_step`` jitted exactly as ``train_and_evaluate`` jits it
  (state donated, batch split over every JAX device), built from ``configs/base.py``
  with only the batch size changed, so the convolution implementation is the default a
  user gets (``model.conv_impl='auto'``); and the jitted forward pass in inference mode;
- PyTorch: ``benchmarks/torch_crnn.py``, the same network, one Adam step with
  ``nn.CTCLoss``, and the forward pass under ``torch.inference_mode()``.

Both use every core the process may run on: XLA's CPU client sizes its thread pool to
them, and PyTorch is given the same number with ``torch.set_num_threads``. Both see the
same random 32x128 images and labels. For each batch size it prints images/s (median and
range over the rounds), the crnn_jax/PyTorch ratio (median of the per-round pairs),
compile times, peak memory, and achieved GFLOP/s against a jitted float32 matmul. The
last line is ``ratio train=X infer=Y``: crnn_jax over PyTorch, the median of all pairs
over all batch sizes.

Needs the ``[bench]`` extra (torch). Run from the repository root; the defaults (batch
64 and 256, 5 rounds) take about 5 minutes on an otherwise idle 2-core machine (12 when
other jobs share it):

    .venv/bin/python benchmarks/train_speed.py
    .venv/bin/python benchmarks/train_speed.py --conv_impl=xla   # the plain formulation
    .venv/bin/python benchmarks/train_speed.py --cpu_devices=2   # batch split over 2 host devices
    .venv/bin/python benchmarks/train_speed.py --malloc=reuse    # as scripts/train.py runs

Never part of the test run.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crnn_jax.memory import reuse_freed_memory  # noqa: E402

HEIGHT, WIDTH, MAX_LABEL = 32, 128, 10


def make_data(batch: int, num_classes: int, seed: int = 0) -> dict:
  """Random uint8 images (B, H, W), full widths, labels of 3-10 characters (no blank)."""
  r = np.random.RandomState(seed)
  lengths = r.randint(3, MAX_LABEL + 1, size=batch)
  return {
      "images": r.randint(0, 256, size=(batch, HEIGHT, WIDTH)).astype(np.uint8),
      "widths": np.full((batch,), WIDTH, np.int32),
      "labels": r.randint(1, num_classes, size=(batch, MAX_LABEL)).astype(np.int32),
      "label_paddings": (np.arange(MAX_LABEL)[None] >= lengths[:, None]).astype(np.float32),
  }


class RssPeak:
  """Largest resident-set growth over a block, sampled every 2 ms from /proc/self/statm."""

  def __init__(self):
    self._page = os.sysconf("SC_PAGE_SIZE")

  def _rss(self) -> int:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * self._page

  def __enter__(self):
    self.start = self._rss()
    self.peak = self.start
    self._stop = threading.Event()

    def sample():
      while not self._stop.is_set():
        self.peak = max(self.peak, self._rss())
        time.sleep(0.002)

    self._thread = threading.Thread(target=sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self._rss())

  @property
  def growth_mb(self) -> float:
    return (self.peak - self.start) / 2**20


def matmul_gflops(n: int = 4096, repeats: int = 5) -> list[float]:
  """GFLOP/s of a jitted float32 n x n x n matmul, one value per timed call."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    out.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
  return out


class JaxSide:
  """crnn_jax's train step and inference, as train_and_evaluate builds them."""

  def __init__(self, batch: int, conv_impl: str):
    import jax
    from configs import base
    from crnn_jax import charset as charset_lib
    from crnn_jax import sharding, train

    self.jax = jax
    config = base.get_config()
    config.train.batch_size = batch
    config.model.conv_impl = conv_impl
    self.config = config
    charset = train.make_charset(config)
    self.num_classes = charset.num_classes
    mesh = sharding.make_mesh()
    sharding.check_batch_size(batch, mesh)
    repl, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.model = train.make_model(config, self.num_classes)
    self.state = jax.jit(functools.partial(train.create_train_state, config, self.model),
                         out_shardings=repl)(jax.random.key(0))
    self.rng = jax.random.key(1)
    self.batch = sharding.to_global(make_data(batch, self.num_classes), mesh)

    step = jax.jit(functools.partial(train.train_step, blank_id=charset_lib.BLANK_ID),
                   in_shardings=(repl, split, repl), out_shardings=(repl, repl),
                   donate_argnums=0)
    t = time.perf_counter()
    lowered = step.lower(self.state, self.batch, self.rng)
    self.train_fn = lowered.compile()
    self.train_compile_s = time.perf_counter() - t
    # XLA counts the FLOPs of one device's program; every device runs one.
    self.devices = mesh.devices.size
    self.train_flops = self.train_fn.cost_analysis()["flops"] * self.devices
    self.train_memory = self.train_fn.memory_analysis()

    model = self.model

    def infer(params, batch_stats, images, widths):
      x = images.astype(jax.numpy.float32)[..., None] / 255.0
      return model.apply({"params": params, "batch_stats": batch_stats}, x, widths,
                         train=False)[0]

    infer_jit = jax.jit(infer, in_shardings=(repl, repl, split, split), out_shardings=split)
    t = time.perf_counter()
    self.infer_fn = infer_jit.lower(self.state.params, self.state.batch_stats,
                                    self.batch["images"], self.batch["widths"]).compile()
    self.infer_compile_s = time.perf_counter() - t
    self.infer_flops = self.infer_fn.cost_analysis()["flops"] * self.devices
    self.infer_memory = self.infer_fn.memory_analysis()

  def nominal_flops(self) -> tuple[float, float]:
    """XLA's FLOP count of the train step and of the forward pass with plain ``lax``
    convolutions: the model's arithmetic, whichever formulation runs (compiled for
    the count only, never run)."""
    jax = self.jax
    from crnn_jax import charset as charset_lib
    from crnn_jax import train
    model = train.make_model(self.config, self.num_classes).clone(conv_impl="xla")
    state = self.state.replace(apply_fn=model.apply)
    step = functools.partial(train.train_step, blank_id=charset_lib.BLANK_ID)
    tr = jax.jit(step).lower(state, self.batch, self.rng).compile().cost_analysis()["flops"]
    tr *= self.devices

    def infer(params, batch_stats, images, widths):
      x = images.astype(jax.numpy.float32)[..., None] / 255.0
      return model.apply({"params": params, "batch_stats": batch_stats}, x, widths,
                         train=False)[0]

    inf = jax.jit(infer).lower(self.state.params, self.state.batch_stats,
                               self.batch["images"], self.batch["widths"]).compile()
    return tr, inf.cost_analysis()["flops"] * self.devices

  def train(self, steps: int) -> float:
    loss = None
    for _ in range(steps):
      self.state, metrics = self.train_fn(self.state, self.batch, self.rng)
      loss = metrics["loss"]
    return float(loss)

  def infer(self, steps: int) -> None:
    out = None
    for _ in range(steps):
      out = self.infer_fn(self.state.params, self.state.batch_stats, self.batch["images"],
                          self.batch["widths"])
    out.block_until_ready()


class TorchSide:
  """The PyTorch peer on the same data."""

  def __init__(self, batch: int, num_classes: int, threads: int):
    import torch
    import torch_crnn

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    data = make_data(batch, num_classes)
    self.images = torch.from_numpy(data["images"].astype(np.float32)[:, None] / 255.0)
    lengths = (data["label_paddings"] < 0.5).sum(1)
    self.labels = torch.from_numpy(data["labels"]).long()
    self.label_lengths = torch.from_numpy(lengths).long()
    self.model = torch_crnn.TorchCRNN(num_classes)
    self.train_fn = torch_crnn.make_train_step(self.model)
    self.infer_fn = torch_crnn.make_infer(self.model)
    self.num_params = torch_crnn.count_params(self.model)

  def train(self, steps: int) -> float:
    loss = None
    for _ in range(steps):
      loss = self.train_fn(self.images, self.labels, self.label_lengths)
    return float(loss)

  def infer(self, steps: int) -> None:
    for _ in range(steps):
      self.infer_fn(self.images)


def timed(fn, steps: int, batch: int) -> float:
  """Images/s of ``fn(steps)``."""
  t = time.perf_counter()
  fn(steps)
  return steps * batch / (time.perf_counter() - t)


def torch_memory(batch: int, num_classes: int, threads: int, malloc: str) -> dict:
  """PyTorch's peak resident-set growth (MB) over its first train and infer steps,
  measured in a fresh process so that nothing else's freed memory hides it."""
  code = (f"import sys; sys.argv = ['x']; sys.path[:0] = {sys.path[:2]!r}; "
          f"import train_speed as b; b.reuse_freed_memory() if {malloc == 'reuse'} else None; "
          f"t = b.TorchSide({batch}, {num_classes}, {threads}); out = {{}}\n"
          f"for k, f in (('train', t.train), ('infer', t.infer)):\n"
          f"  with b.RssPeak() as m: f(1)\n"
          f"  out[k] = m.growth_mb\n"
          f"print(out)")
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return ast.literal_eval(res.stdout.strip().splitlines()[-1])


def _spread(xs: list[float]) -> str:
  return f"{statistics.median(xs):7.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def bench_batch(batch: int, args, threads: int, mm: list[float], all_ratios: dict) -> None:
  import jax

  j = JaxSide(batch, args.conv_impl)
  t = TorchSide(batch, j.num_classes, threads)
  nominal_train, nominal_infer = j.nominal_flops()
  from crnn_jax import conv as conv_lib
  impl = conv_lib.resolve_impl(args.conv_impl)

  # Warm-up: the first runs allocate, fill caches and (PyTorch) pick kernels.
  for _ in range(args.warmup):
    j.train(1), t.train(1), j.infer(1), t.infer(1)

  res = {k: [] for k in ("jt", "tt", "ji", "ti")}
  for r in range(args.rounds):
    # Alternate who goes first, so a drifting machine does not favour one side.
    order = [("j", j), ("t", t)] if r % 2 == 0 else [("t", t), ("j", j)]
    for mode in ("t", "i"):
      for name, side in order:
        fn = side.train if mode == "t" else side.infer
        res[name + mode].append(timed(fn, args.steps, batch))
    mm.append(matmul_gflops(repeats=1)[0])
  train_ratios = [a / b for a, b in zip(res["jt"], res["tt"])]
  infer_ratios = [a / b for a, b in zip(res["ji"], res["ti"])]
  all_ratios["train"] += train_ratios
  all_ratios["infer"] += infer_ratios

  mm_med = statistics.median(mm)
  jt_med, ji_med = statistics.median(res["jt"]), statistics.median(res["ji"])
  tm, im = j.train_memory, j.infer_memory

  def xla_mb(m):
    return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
            - m.alias_size_in_bytes) / 2**20

  w = 13
  print(f"\n== batch {batch}: {args.rounds} rounds of {args.steps} step(s), {threads} threads, "
        f"crnn_jax conv_impl={args.conv_impl!r} ({impl}) on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)")
  print(f"{'':{w}}{'train img/s median [range]':>30}{'infer img/s median [range]':>30}")
  print(f"{'crnn_jax':{w}}{_spread(res['jt']):>30}{_spread(res['ji']):>30}")
  print(f"{'PyTorch':{w}}{_spread(res['tt']):>30}{_spread(res['ti']):>30}")
  print(f"{'ratio':{w}}{_spread(train_ratios):>30}{_spread(infer_ratios):>30}")
  print(f"compile (crnn_jax): train step {j.train_compile_s:.1f} s, inference "
        f"{j.infer_compile_s:.1f} s; PyTorch: none (eager)")
  torch_mem = torch_memory(batch, j.num_classes, threads, args.malloc)
  print(f"peak memory: crnn_jax XLA buffers (arguments + temporaries + outputs) train "
        f"{xla_mb(tm):.0f} MB, infer {xla_mb(im):.0f} MB; PyTorch resident-set growth over "
        f"its first step (own process) train {torch_mem['train']:.0f} MB, infer "
        f"{torch_mem['infer']:.0f} MB")
  print(f"arithmetic: model (plain convolutions, XLA cost analysis) "
        f"{nominal_train / batch / 1e9:.2f} GFLOP/image train, "
        f"{nominal_infer / batch / 1e9:.2f} infer; executed by crnn_jax's step "
        f"{j.train_flops / batch / 1e9:.2f} / {j.infer_flops / batch / 1e9:.2f}")
  def gflops(flops_per_image, images_per_s):
    return flops_per_image * images_per_s / 1e9

  train_model = gflops(nominal_train / batch, jt_med)
  infer_model = gflops(nominal_infer / batch, ji_med)
  train_exec = gflops(j.train_flops / batch, jt_med)
  print(f"GFLOP/s (model arithmetic / time): crnn_jax train {train_model:.0f} "
        f"({train_model / mm_med:.0%} of matmul), infer {infer_model:.0f} "
        f"({infer_model / mm_med:.0%}); PyTorch train "
        f"{gflops(nominal_train / batch, statistics.median(res['tt'])):.0f}, infer "
        f"{gflops(nominal_infer / batch, statistics.median(res['ti'])):.0f}; executed by "
        f"crnn_jax train {train_exec:.0f} ({train_exec / mm_med:.0%}); jitted float32 4096^3 "
        f"matmul {mm_med:.0f} GFLOP/s (median of {len(mm)})")
  sys.stdout.flush()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_sizes", default="64,256", help="comma-separated batch sizes")
  parser.add_argument("--rounds", type=int, default=5, help="timed A/B rounds per batch size")
  parser.add_argument("--steps", type=int, default=1, help="steps per timed run")
  parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first")
  parser.add_argument("--conv_impl", default="auto", help="crnn_jax model.conv_impl")
  parser.add_argument("--cpu_devices", type=int, default=1,
                      help="JAX host devices to split the batch over (jax_num_cpu_devices)")
  parser.add_argument("--malloc", choices=("system", "reuse"), default="system",
                      help="'reuse': glibc keeps freed memory (see reuse_freed_memory)")
  args = parser.parse_args(argv)
  if args.malloc == "reuse" and not reuse_freed_memory():
    sys.exit("--malloc=reuse needs glibc's mallopt.")

  try:
    import torch
  except ImportError:
    sys.exit("PyTorch is missing: install the [bench] extra (pip install -e '.[bench]').")
  import jax
  jax.config.update("jax_num_cpu_devices", args.cpu_devices)

  start = time.perf_counter()
  threads = len(os.sched_getaffinity(0))
  print(f"machine: {threads} cores ({_cpu_name()}); jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, torch {torch.__version__} with {threads} threads; "
        f"malloc: {args.malloc}")
  mm = matmul_gflops()
  print(f"jitted float32 4096^3 matmul: {statistics.median(mm):.0f} GFLOP/s "
        f"(median of {len(mm)})")
  ratios = {"train": [], "infer": []}
  for batch in [int(b) for b in args.batch_sizes.split(",")]:
    bench_batch(batch, args, threads, mm, ratios)
  print(f"\ntook {time.perf_counter() - start:.0f} s")
  print(f"ratio train={statistics.median(ratios['train']):.2f} "
        f"infer={statistics.median(ratios['infer']):.2f}")


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown CPU"


if __name__ == "__main__":
  main()
