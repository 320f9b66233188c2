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
    .venv/bin/python benchmarks/train_speed.py --conv-impl=xla   # the plain formulation
    .venv/bin/python benchmarks/train_speed.py --cpu-devices=2   # batch split over 2 host devices
    .venv/bin/python benchmarks/train_speed.py --malloc=system   # glibc's default on both sides

On a GPU, one command compares crnn_jax in float32 and bfloat16 (``model.compute_dtype``)
with PyTorch in float32 and under bfloat16 autocast, with ``channels_last`` and
``torch.compile`` variants, at batch 256 and 1024, and prints the fraction of the GPU's
measured bfloat16 matmul rate each training step reaches:

    python benchmarks/train_speed.py --device=gpu

GPU timing: every timed region ends by waiting for the device (``float(loss)`` and
``block_until_ready`` in JAX, ``torch.cuda.synchronize`` in PyTorch) and starts after
the previous one's wait; both sides use the same TF32 setting for float32 matmuls and
convolutions (``--tf32``); PyTorch runs with ``cudnn.benchmark``; compilation (XLA's and
``torch.compile``'s) happens in the untimed warm-up and is reported apart. JAX is held to
half of the GPU's memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``) so PyTorch has the rest.
Every flag that the GPU mode sets can be given on CPU too, e.g. a quick check that the
script runs:

    python benchmarks/train_speed.py --device=cpu --batch-sizes=8 --rounds=1 --warmup=1 \
        --jax-dtypes=float32,bfloat16 --torch-modes=fp32,bf16,bf16+cl

Without PyTorch installed, only the crnn_jax side runs (no ratio).

Never part of the test run.
"""

from __future__ import annotations

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

from crnn_jax import cli  # noqa: E402
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


def matmul_gflops(
    n: int = 4096, repeats: int = 5, dtype: str = "float32", calls: int = 1
) -> list[float]:
  """GFLOP/s of a jitted n x n x n matmul, one value per timed run of ``calls`` calls."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(calls):
      c = f(a, b)
    c.block_until_ready()
    out.append(calls * 2 * n**3 / (time.perf_counter() - t) / 1e9)
  return out


def torch_matmul_gflops(n: int = 8192, repeats: int = 5, calls: int = 20) -> list[float]:
  """GFLOP/s of a bfloat16 n x n x n matmul in PyTorch on the GPU."""
  import torch

  a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
  b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
  a @ b
  out = []
  for _ in range(repeats):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
      a @ b
    torch.cuda.synchronize()
    out.append(calls * 2 * n**3 / (time.perf_counter() - t) / 1e9)
  return out


class JaxSide:
  """crnn_jax's train step and inference, as train_and_evaluate builds them.

  ``compute_dtype`` is ``model.compute_dtype``; None leaves the config's default.
  """

  def __init__(self, batch: int, conv_impl: str, compute_dtype: str | None = None):
    import jax
    from configs import base
    from crnn_jax import charset as charset_lib
    from crnn_jax import models, sharding, train

    self.jax = jax
    config = base.get_config()
    config.train.batch_size = batch
    config.model.conv_impl = conv_impl
    if compute_dtype is not None:
      config.model.compute_dtype = compute_dtype
    self.config = config
    charset = train.make_charset(config)
    self.num_classes = charset.num_classes
    mesh = sharding.make_mesh()
    sharding.check_batch_size(batch, mesh)
    repl, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    self.model = models.from_config(config.model, self.num_classes)
    self.dtype = self.model.dtype
    self.state = jax.jit(
        functools.partial(train.create_train_state, config, self.model), out_shardings=repl
    )(jax.random.key(0))
    self.rng = jax.random.key(1)
    self.batch = sharding.to_global(make_data(batch, self.num_classes), mesh)

    step = jax.jit(
        functools.partial(train.train_step, blank_id=charset_lib.BLANK_ID),
        in_shardings=(repl, split, repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
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
      # uint8 images: the model scales them as in training.
      return model.apply(
          {"params": params, "batch_stats": batch_stats}, images, widths, train=False
      )[0]

    infer_jit = jax.jit(infer, in_shardings=(repl, repl, split, split), out_shardings=split)
    t = time.perf_counter()
    self.infer_fn = infer_jit.lower(
        self.state.params, self.state.batch_stats, self.batch["images"], self.batch["widths"]
    ).compile()
    self.infer_compile_s = time.perf_counter() - t
    self.infer_flops = self.infer_fn.cost_analysis()["flops"] * self.devices
    self.infer_memory = self.infer_fn.memory_analysis()

  def nominal_flops(self) -> tuple[float, float]:
    """XLA's FLOP count of the train step and of the forward pass with plain ``lax``
    convolutions: the model's arithmetic, whichever formulation runs (compiled for
    the count only, never run)."""
    jax = self.jax
    from crnn_jax import charset as charset_lib
    from crnn_jax import models, train

    model = models.from_config(self.config.model, self.num_classes).clone(conv_impl="xla")
    state = self.state.replace(apply_fn=model.apply)
    step = functools.partial(train.train_step, blank_id=charset_lib.BLANK_ID)
    tr = jax.jit(step).lower(state, self.batch, self.rng).compile().cost_analysis()["flops"]
    tr *= self.devices

    def infer(params, batch_stats, images, widths):
      # uint8 images: the model scales them as in training.
      return model.apply(
          {"params": params, "batch_stats": batch_stats}, images, widths, train=False
      )[0]

    inf = (
        jax.jit(infer)
        .lower(
            self.state.params, self.state.batch_stats, self.batch["images"], self.batch["widths"]
        )
        .compile()
    )
    return tr, inf.cost_analysis()["flops"] * self.devices

  def train(self, steps: int) -> float:
    loss = None
    for _ in range(steps):
      self.state, metrics = self.train_fn(self.state, self.batch, self.rng)
      loss = metrics["loss"]
    return float(loss)  # waits for the last step (each step needs the one before)

  def infer(self, steps: int) -> None:
    out = None
    for _ in range(steps):
      out = self.infer_fn(
          self.state.params, self.state.batch_stats, self.batch["images"], self.batch["widths"]
      )
    out.block_until_ready()


# PyTorch variants: '+'-joined options of a base dtype ('fp32' or 'bf16', autocast).
TORCH_OPTIONS = ("cl", "compile")


def parse_torch_mode(mode: str) -> tuple[str, set]:
  """'bf16+cl+compile' -> ('bf16', {'cl', 'compile'}); raises ValueError for others."""
  base, *options = mode.split("+")
  if base not in ("fp32", "bf16") or not set(options) <= set(TORCH_OPTIONS):
    raise ValueError(
        f"torch mode {mode!r}: expected fp32 or bf16, optionally followed by "
        f"+{' +'.join(TORCH_OPTIONS)} (e.g. bf16+cl+compile)."
    )
  return base, set(options)


class TorchSide:
  """The PyTorch peer on the same data.

  Args:
    mode: ``fp32`` or ``bf16`` (autocast), with ``+cl`` (``channels_last`` model and
      images) and ``+compile`` (``torch.compile``; compiled in the first, untimed call).
    device: 'cpu' or 'cuda'.
  """

  def __init__(
      self, batch: int, num_classes: int, threads: int, device: str = "cpu", mode: str = "fp32"
  ):
    import torch
    import torch_crnn

    base, options = parse_torch_mode(mode)
    self.torch = torch
    self.device = device
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    data = make_data(batch, num_classes)
    self.images = torch.from_numpy(data["images"].astype(np.float32)[:, None] / 255.0)
    lengths = (data["label_paddings"] < 0.5).sum(1)
    self.labels = torch.from_numpy(data["labels"]).long()
    self.label_lengths = torch.from_numpy(lengths).long()
    self.model = torch_crnn.TorchCRNN(num_classes)
    if device != "cpu":
      self.images, self.labels, self.label_lengths, self.model = (
          x.to(device) for x in (self.images, self.labels, self.label_lengths, self.model)
      )
    if "cl" in options:
      self.model = self.model.to(memory_format=torch.channels_last)
      self.images = self.images.contiguous(memory_format=torch.channels_last)
    self.num_params = torch_crnn.count_params(self.model)
    model = torch.compile(self.model) if "compile" in options else self.model
    autocast = torch.bfloat16 if base == "bf16" else None
    self.train_fn = torch_crnn.make_train_step(
        model, autocast=autocast, device_type=torch.device(device).type
    )
    self.infer_fn = torch_crnn.make_infer(
        model, autocast=autocast, device_type=torch.device(device).type
    )

  def _sync(self):
    if self.device != "cpu":
      self.torch.cuda.synchronize()

  def train(self, steps: int) -> float:
    self._sync()
    loss = None
    for _ in range(steps):
      loss = self.train_fn(self.images, self.labels, self.label_lengths)
    self._sync()
    return float(loss)

  def infer(self, steps: int) -> None:
    self._sync()
    for _ in range(steps):
      self.infer_fn(self.images)
    self._sync()


def timed(fn, steps: int, batch: int) -> float:
  """Images/s of ``fn(steps)``."""
  t = time.perf_counter()
  fn(steps)
  return steps * batch / (time.perf_counter() - t)


def torch_memory(batch: int, num_classes: int, threads: int, malloc: str) -> dict:
  """PyTorch's peak resident-set growth (MB) over its first train and infer steps,
  measured in a fresh process so that nothing else's freed memory hides it."""
  code = (
      f"import sys; sys.argv = ['x']; sys.path[:0] = {sys.path[:2]!r}; "
      f"import train_speed as b; b.reuse_freed_memory() if {malloc == 'reuse'} else None; "
      f"t = b.TorchSide({batch}, {num_classes}, {threads}); out = {{}}\n"
      f"for k, f in (('train', t.train), ('infer', t.infer)):\n"
      f"  with b.RssPeak() as m: f(1)\n"
      f"  out[k] = m.growth_mb\n"
      f"print(out)"
  )
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return ast.literal_eval(res.stdout.strip().splitlines()[-1])


def _spread(xs: list[float]) -> str:
  return f"{statistics.median(xs):7.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def bench_batch(batch: int, args, threads: int, mm: list[float], all_ratios: dict) -> None:
  import jax

  gpu = args.device == "gpu"
  many_jax, many_torch = len(args.jax_dtypes) > 1, len(args.torch_modes) > 1
  jax_sides = [
      (f"crnn_jax {d}" if many_jax else "crnn_jax", JaxSide(batch, args.conv_impl, d))
      for d in args.jax_dtypes
  ]
  j = jax_sides[0][1]
  torch_sides = [
      (
          f"PyTorch {m}" if many_torch else "PyTorch",
          TorchSide(batch, j.num_classes, threads, args.torch_device, m),
      )
      for m in args.torch_modes
  ]
  sides = jax_sides + torch_sides
  nominal_train, nominal_infer = j.nominal_flops()
  from crnn_jax import conv as conv_lib

  impl = conv_lib.resolve_impl(args.conv_impl)

  # Warm-up: the first runs allocate, fill caches and (PyTorch) pick kernels or compile.
  first_s, torch_peak = {}, {}
  for w in range(args.warmup):
    for mode in ("train", "infer"):
      for name, side in sides:
        is_torch = isinstance(side, TorchSide)
        if w == 0 and gpu and is_torch:
          side.torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        getattr(side, mode)(1)
        if w == 0 and is_torch:
          first_s[name, mode] = time.perf_counter() - t
          if gpu:
            torch_peak[name, mode] = side.torch.cuda.max_memory_allocated() / 2**20

  res = {(name, mode): [] for name, _ in sides for mode in ("t", "i")}
  for r in range(args.rounds):
    # Alternate who goes first, so a drifting machine does not favour one side.
    order = sides if r % 2 == 0 else sides[::-1]
    for mode in ("t", "i"):
      for name, side in order:
        fn = side.train if mode == "t" else side.infer
        res[name, mode].append(timed(fn, args.steps, batch))
    mm.append(matmul_gflops(args.mm_n, 1, args.mm_dtype, args.mm_calls)[0])
  med = {k: statistics.median(v) for k, v in res.items()}
  jname = jax_sides[0][0]

  w = max([13] + [len(name) + 2 for name, _ in sides])
  print(
      f"\n== batch {batch}: {args.rounds} rounds of {args.steps} step(s), {threads} threads, "
      f"crnn_jax conv_impl={args.conv_impl!r} ({impl}) on {jax.device_count()} "
      f"{jax.devices()[0].platform} device(s)"
  )
  print(f"{'':{w}}{'train img/s median [range]':>30}{'infer img/s median [range]':>30}")
  for name, _ in sides:
    print(f"{name:{w}}{_spread(res[name, 't']):>30}{_spread(res[name, 'i']):>30}")
  if torch_sides:
    # The first of each: float32 against float32 by default.
    tname = torch_sides[0][0]
    train_ratios = [a / b for a, b in zip(res[jname, "t"], res[tname, "t"])]
    infer_ratios = [a / b for a, b in zip(res[jname, "i"], res[tname, "i"])]
    all_ratios["train"] += train_ratios
    all_ratios["infer"] += infer_ratios
    print(
        f"{'ratio':{w}}{_spread(train_ratios):>30}{_spread(infer_ratios):>30}"
        + (f"   ({jname} / {tname})" if many_jax or many_torch else "")
    )
    if many_jax or many_torch:
      for mode, what in (("t", "train"), ("i", "infer")):
        bj = max((n for n, _ in jax_sides), key=lambda n: med[n, mode])
        bt = max((n for n, _ in torch_sides), key=lambda n: med[n, mode])
        ratio = med[bj, mode] / med[bt, mode]
        all_ratios["best_" + what].append(ratio)
        print(
            f"best {what}: {bj} {med[bj, mode]:.0f} img/s, {bt} {med[bt, mode]:.0f} img/s: "
            f"{ratio:.2f}x"
        )
  for name, side in jax_sides:
    print(
        f"compile ({name}): train step {side.train_compile_s:.1f} s, inference "
        f"{side.infer_compile_s:.1f} s"
        + (
            "; PyTorch: none (eager)"
            if not many_jax and all("compile" not in m for m in args.torch_modes)
            else ""
        )
    )
  for (name, mode), seconds in first_s.items():
    if "compile" in name:
      print(f"first {mode} call ({name}, includes torch.compile): {seconds:.1f} s")

  def xla_mb(m):
    return (
        m.temp_size_in_bytes
        + m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    ) / 2**20

  xla = "; ".join(
      f"{name} train {xla_mb(side.train_memory):.0f} MB, infer "
      f"{xla_mb(side.infer_memory):.0f} MB"
      for name, side in jax_sides
  )
  if gpu:
    peaks = "; ".join(
        f"{name} train {torch_peak[name, 'train']:.0f} MB, infer "
        f"{torch_peak[name, 'infer']:.0f} MB"
        for name, _ in torch_sides
    )
    print(
        f"peak memory: XLA buffers (arguments + temporaries + outputs) {xla}; PyTorch "
        f"peak CUDA allocation over its first step {peaks or 'not run'}"
    )
  elif torch_sides:
    torch_mem = torch_memory(batch, j.num_classes, threads, args.malloc)
    print(
        (
            f"peak memory: crnn_jax XLA buffers (arguments + temporaries + outputs) train "
            f"{xla_mb(j.train_memory):.0f} MB, infer {xla_mb(j.infer_memory):.0f} MB"
            if not many_jax
            else f"peak memory: XLA buffers (arguments + temporaries + " f"outputs) {xla}"
        )
        + f"; PyTorch resident-set growth over its first step (own process, fp32) train "
        f"{torch_mem['train']:.0f} MB, infer {torch_mem['infer']:.0f} MB"
    )
  else:
    print(f"peak memory: XLA buffers (arguments + temporaries + outputs) {xla}")
  print(
      f"arithmetic: model (plain convolutions, XLA cost analysis) "
      f"{nominal_train / batch / 1e9:.2f} GFLOP/image train, "
      f"{nominal_infer / batch / 1e9:.2f} infer; executed by crnn_jax's step "
      f"{j.train_flops / batch / 1e9:.2f} / {j.infer_flops / batch / 1e9:.2f}"
  )

  def gflops(flops_per_image, images_per_s):
    return flops_per_image * images_per_s / 1e9

  mm_med = statistics.median(mm)
  mm_what = f"jitted {args.mm_dtype} {args.mm_n}^3 matmul"
  if not (gpu or many_jax or many_torch):
    jt_med, ji_med = med[jname, "t"], med[jname, "i"]
    train_model = gflops(nominal_train / batch, jt_med)
    infer_model = gflops(nominal_infer / batch, ji_med)
    train_exec = gflops(j.train_flops / batch, jt_med)
    peer = (
        f"; PyTorch train {gflops(nominal_train / batch, med['PyTorch', 't']):.0f}, infer "
        f"{gflops(nominal_infer / batch, med['PyTorch', 'i']):.0f}"
        if torch_sides
        else ""
    )
    print(
        f"GFLOP/s (model arithmetic / time): crnn_jax train {train_model:.0f} "
        f"({train_model / mm_med:.0%} of matmul), infer {infer_model:.0f} "
        f"({infer_model / mm_med:.0%}){peer}; executed by "
        f"crnn_jax train {train_exec:.0f} ({train_exec / mm_med:.0%}); {mm_what} "
        f"{mm_med:.0f} GFLOP/s (median of {len(mm)})"
    )
  else:
    # Model arithmetic (plain convolutions) per second over the measured matmul rate: the
    # fraction of the chip's bfloat16 peak (as measured) that the step turns into work.
    print(
        f"model arithmetic per second, GFLOP/s train / infer, and the train step's "
        f"fraction of the {mm_what} rate ({mm_med:.0f} GFLOP/s, median of {len(mm)}):"
    )
    for name, _ in sides:
      t_rate = gflops(nominal_train / batch, med[name, "t"])
      i_rate = gflops(nominal_infer / batch, med[name, "i"])
      print(f"  {name:{w}}{t_rate:9.1f} /{i_rate:9.1f}   {t_rate / mm_med:6.1%}")
  sys.stdout.flush()


DEVICE_DEFAULTS = {
    # The CPU comparison as it always ran: the user's default dtype against float32.
    "cpu": {
        "batch_sizes": "64,256",
        "jax_dtypes": "auto",
        "torch_modes": "fp32",
        "steps": 1,
        "mm_dtype": "float32",
        "mm_n": 4096,
        "mm_calls": 1,
    },
    # The GPU comparison; steps are milliseconds, so time 20 per run.
    "gpu": {
        "batch_sizes": "256,1024",
        "jax_dtypes": "float32,bfloat16",
        "torch_modes": "fp32,bf16,bf16+cl,bf16+cl+compile",
        "steps": 20,
        "mm_dtype": "bfloat16",
        "mm_n": 8192,
        "mm_calls": 20,
    },
}


def main(argv=None) -> None:
  parser = cli.parser(__doc__, __file__)
  parser.add_argument(
      "--device",
      choices=("cpu", "gpu"),
      default="cpu",
      help="where both sides run; sets the defaults of the flags below",
  )
  parser.add_argument(
      "--batch-sizes", help="comma-separated batch sizes (cpu: 64,256; " "gpu: 256,1024)"
  )
  parser.add_argument("--rounds", type=int, default=5, help="timed A/B rounds per batch size")
  parser.add_argument("--steps", type=int, help="steps per timed run (cpu: 1, gpu: 20)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first")
  parser.add_argument("--conv-impl", default="auto", help="crnn_jax model.conv_impl")
  parser.add_argument(
      "--jax-dtypes",
      help="comma-separated crnn_jax model.compute_dtype "
      "values (cpu: auto, gpu: float32,bfloat16)",
  )
  parser.add_argument(
      "--torch-modes",
      help="comma-separated PyTorch variants: fp32 or bf16 "
      "(autocast), +cl (channels_last), +compile (torch.compile); 'none' "
      "skips PyTorch (cpu: fp32, gpu: fp32,bf16,bf16+cl,bf16+cl+compile)",
  )
  parser.add_argument(
      "--tf32",
      choices=("on", "off"),
      default="on",
      help="gpu: TF32 for float32 matmuls and convolutions, both sides alike",
  )
  parser.add_argument(
      "--cpu-devices",
      type=int,
      default=1,
      help="JAX host devices to split the batch over (jax_num_cpu_devices)",
  )
  # 'reuse' is the default because it is how scripts/train.py runs and because it applies
  # to the whole process: PyTorch gains as much from it as crnn_jax, so it is the fairer
  # comparison (docs/speed.md); 'system' flatters crnn_jax.
  parser.add_argument(
      "--malloc",
      choices=("system", "reuse"),
      default="reuse",
      help="'reuse' (default): glibc keeps freed memory, both sides "
      "(see reuse_freed_memory); 'system': glibc's defaults",
  )
  args = parser.parse_args(argv)
  defaults = DEVICE_DEFAULTS[args.device]
  for name in ("batch_sizes", "jax_dtypes", "torch_modes", "steps"):
    if getattr(args, name) is None:
      setattr(args, name, defaults[name])
  args.mm_dtype, args.mm_n, args.mm_calls = (defaults[k] for k in ("mm_dtype", "mm_n", "mm_calls"))
  args.jax_dtypes = args.jax_dtypes.split(",")
  args.torch_modes = [] if args.torch_modes == "none" else args.torch_modes.split(",")
  for mode in args.torch_modes:
    try:
      parse_torch_mode(mode)
    except ValueError as e:
      parser.error(str(e))
  if args.malloc == "reuse" and not reuse_freed_memory():
    sys.exit("--malloc=reuse needs glibc's mallopt.")

  try:
    import torch
  except ImportError:
    torch = None
    if args.torch_modes:
      print(
          "note: PyTorch is missing (install the [bench] extra: pip install -e '.[bench]'); "
          "timing crnn_jax alone, no ratio."
      )
    args.torch_modes = []
  if args.device == "gpu":
    # JAX preallocates most of the GPU's memory; leave PyTorch half of it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
  import jax

  if args.device == "cpu":
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    args.torch_device = "cpu"
  else:
    if jax.default_backend() != "gpu":
      sys.exit(f"--device=gpu: JAX sees no GPU (backend {jax.default_backend()!r}).")
    if torch is not None and not torch.cuda.is_available():
      sys.exit("--device=gpu: PyTorch sees no CUDA device.")
    tf32 = args.tf32 == "on"
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "float32")
    if torch is not None:
      torch.backends.cuda.matmul.allow_tf32 = tf32
      torch.backends.cudnn.allow_tf32 = tf32
      torch.backends.cudnn.benchmark = True
    args.torch_device = "cuda"

  start = time.perf_counter()
  threads = len(os.sched_getaffinity(0))
  peer = f"torch {torch.__version__} with {threads} threads" if torch is not None else "no torch"
  print(
      f"machine: {threads} cores ({_cpu_name()}); jax {jax.__version__} on "
      f"{jax.devices()[0].platform}"
      + (f" ({jax.devices()[0].device_kind})" if args.device == "gpu" else "")
      + f", {peer}; malloc: {args.malloc}"
      + (f"; TF32 {args.tf32} on both sides" if args.device == "gpu" else "")
  )
  mm = matmul_gflops(args.mm_n, 5, args.mm_dtype, args.mm_calls)
  print(
      f"jitted {args.mm_dtype} {args.mm_n}^3 matmul: {statistics.median(mm):.0f} GFLOP/s "
      f"(median of {len(mm)})"
  )
  if args.device == "gpu" and torch is not None:
    print(
        f"PyTorch bfloat16 8192^3 matmul: {statistics.median(torch_matmul_gflops()):.0f} "
        f"GFLOP/s (median of 5)"
    )
  ratios = {"train": [], "infer": [], "best_train": [], "best_infer": []}
  for batch in [int(b) for b in args.batch_sizes.split(",")]:
    bench_batch(batch, args, threads, mm, ratios)
  print(f"\ntook {time.perf_counter() - start:.0f} s")
  if ratios["best_train"]:
    print(
        f"best against best: train {', '.join(f'{r:.2f}' for r in ratios['best_train'])}, "
        f"infer {', '.join(f'{r:.2f}' for r in ratios['best_infer'])} (per batch size)"
    )
  if ratios["train"]:
    print(
        f"ratio train={statistics.median(ratios['train']):.2f} "
        f"infer={statistics.median(ratios['infer']):.2f}"
    )
  else:
    print("ratio: none (PyTorch not run)")


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
