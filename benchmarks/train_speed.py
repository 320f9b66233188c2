"""Benchmark: crnn_jax training and inference speed against the same network in PyTorch.

Times, in one process and in alternating order (warm-up and compilation excluded):

- crnn_jax: ``crnn_jax.train.train_step`` jitted exactly as ``train_and_evaluate`` jits it
  (state donated, batch split over every JAX device), built from ``configs/base.py``
  with only the batch size changed, so the convolution implementation is the default a
  user gets (``model.conv_impl='auto'``); and the jitted forward pass in inference mode;
- PyTorch: ``benchmarks/torch_crnn.py``, the same network, one Adam step with
  ``nn.CTCLoss``, and the forward pass under ``torch.inference_mode()``, in several
  modes (``--torch-modes``), because the comparison that counts is against PyTorch's
  best setting on the machine, not its plain eager default.

On CPU, crnn_jax's win is an algorithm, not a better implementation of the same one:
its 3x3 convolutions (``crnn_jax/conv.py``) use Winograd's F(4x4, 3x3), which needs 4x
fewer multiplications, where PyTorch runs oneDNN's direct convolution (``jit:avx2`` on
an AVX2 machine; the script asks oneDNN which kernel it ran and prints it). So crnn_jax
executes fewer FLOPs per image than PyTorch, and its GFLOP/s are lower.

PyTorch's modes are a base dtype, ``fp32`` or ``bf16`` (autocast), with '+'-joined
options: ``+cl`` (``channels_last`` model and images), ``+fused`` (Adam's fused
implementation), ``+freeze`` (inference from a frozen copy with prepacked weights:
``torch.jit.freeze`` and ``torch.jit.optimize_for_inference``, or inductor's freezing with
``+compile``), ``+compile`` (``torch.compile``; compiled in the untimed warm-up) and
``+nnpack`` (oneDNN switched off for that side, so that PyTorch convolves with NNPACK, at
batch 16 and up, and runs its own LSTM). oneDNN is PyTorch's default on CPU; the script
prints whether it and NNPACK are available. The CPU default measures ``fp32`` (plain
eager), ``fp32+cl+fused+freeze`` and ``fp32+cl+fused+freeze+compile``; ``+nnpack`` is
left out because in a short check on the project's machine it trained and inferred
slower than oneDNN.

Both use every core the process may run on: XLA's CPU client sizes its thread pool to
them, and PyTorch is given the same number with ``torch.set_num_threads``. Both see the
same random 32x128 images and labels. For each batch size it prints images/s of every
side (median and range over the rounds; each timed run is ``--steps`` steps), compile
times and peak memory. The ratio row and the last line, ``ratio train=X infer=Y``,
compare crnn_jax with PyTorch's best mode at each batch size (the mode with the highest
median images/s, named on the line above it), as the median of the per-round ratios
over all batch sizes.

Arithmetic: it prints the FLOPs each side executes per image and, as a fraction of the
best float32 matmul rate measured on the machine (numpy, PyTorch and JAX are each timed
on a 4096^3 matmul; the best one is re-timed every round), its executed GFLOP/s.
crnn_jax's count is XLA's cost analysis of the compiled step, less the multiplications
by zero entries of the Winograd transform matrices (its transforms are dense matmuls
against constant matrices; the zeros are counted in the step's jaxpr). PyTorch's count
is XLA's cost analysis of the same network with plain convolutions (``conv_impl='xla'``),
what oneDNN's direct convolution executes; a ``+nnpack`` mode gets none (NNPACK picks its
own algorithm). It also prints both models' parameter counts: 6,617,663 for crnn_jax,
6,619,711 for PyTorch, whose ``nn.LSTM`` keeps a second bias vector.

Needs the ``[bench]`` extra (torch). Run from the repository root. The CPU defaults
(batch 64 and 256, 3 rounds of 2 steps, three PyTorch modes) should take about 10 minutes
on an otherwise idle 2-core machine, torch.compile's compilation included (an estimate
from the per-step times in docs/speed.md); 3 steps per timed run would take about 13:

    .venv/bin/python benchmarks/train_speed.py
    .venv/bin/python benchmarks/train_speed.py --conv-impl=xla   # the plain formulation
    .venv/bin/python benchmarks/train_speed.py --cpu-devices=2   # batch split over 2 host devices
    .venv/bin/python benchmarks/train_speed.py --malloc=system   # glibc's default on both sides
    .venv/bin/python benchmarks/train_speed.py --torch-modes=fp32,fp32+nnpack,fp32+cl+fused

On a GPU, one command compares crnn_jax in float32 and bfloat16 (``model.compute_dtype``)
with PyTorch in float32 and under bfloat16 autocast, with ``channels_last`` and
``torch.compile`` variants, at batch 256 and 1024, and prints each side's arithmetic per
second as a fraction of the GPU's measured bfloat16 matmul rate (there both sides' FLOPs
are counted with plain convolutions, whichever algorithm cuDNN picks):

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
        --steps=1 --jax-dtypes=float32,bfloat16 --torch-modes=fp32,bf16,bf16+cl

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


def numpy_matmul_gflops(n: int = 4096, repeats: int = 5) -> list[float]:
  """GFLOP/s of a float32 n x n x n ``numpy.matmul`` (its BLAS, every core)."""
  r = np.random.default_rng(0)
  a, b = (r.standard_normal((n, n), dtype=np.float32) for _ in range(2))
  a @ b
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    a @ b
    out.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
  return out


def torch_cpu_matmul_gflops(n: int = 4096, repeats: int = 5) -> list[float]:
  """GFLOP/s of a float32 n x n x n ``torch.mm`` on the CPU (threads as set)."""
  import torch

  a, b = torch.randn(n, n), torch.randn(n, n)
  torch.mm(a, b)
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    torch.mm(a, b)
    out.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
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


def _subjaxprs(params: dict):
  from jax.extend import core

  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, (core.ClosedJaxpr, core.Jaxpr)):
        yield item


def zero_entry_flops(closed_jaxpr) -> float:
  """FLOPs that the ``dot_general``s of a jaxpr spend on zero entries of constant operands.

  crnn_jax's Winograd transforms (``crnn_jax/conv.py``) are dense matmuls against
  constant Kronecker matrices, a good part of whose entries are zero: XLA runs those
  multiplications and its cost analysis counts them, but the convolution does not need
  them. Constants are followed into nested jaxprs (jit, custom_vjp, remat); a scan's body
  counts once per iteration.
  """
  from jax.extend import core

  def walk(jaxpr, known: dict) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
      vals = [v.val if isinstance(v, core.Literal) else known.get(v) for v in eqn.invars]
      if eqn.primitive.name == "dot_general":
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        for const, other, contracted, batched in (
            (vals[0], eqn.invars[1], rc, rb),
            (vals[1], eqn.invars[0], lc, lb),
        ):
          if const is not None:
            const = np.asarray(const)
            # Each entry of the constant meets every free element of the other operand.
            free = np.prod(
                [
                    d
                    for i, d in enumerate(other.aval.shape)
                    if i not in contracted and i not in batched
                ]
            )
            total += 2.0 * (const.size - np.count_nonzero(const)) * free
            break
      times, mapped = 1, len(eqn.invars)
      if eqn.primitive.name == "scan":
        # Only the scan's constants reach its body whole; its xs arrive sliced.
        times, mapped = eqn.params["length"], eqn.params["num_consts"]
      for sub in _subjaxprs(eqn.params):
        closed = isinstance(sub, core.ClosedJaxpr)
        inner = sub.jaxpr if closed else sub
        inner_known = dict(zip(inner.constvars, sub.consts)) if closed else {}
        if len(inner.invars) == len(eqn.invars):
          inner_known.update(
              (v, x) for v, x in zip(inner.invars[:mapped], vals[:mapped]) if x is not None
          )
        total += times * walk(inner, inner_known)
    return total

  return walk(closed_jaxpr.jaxpr, dict(zip(closed_jaxpr.jaxpr.constvars, closed_jaxpr.consts)))


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
    self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
    self.num_stats = sum(x.size for x in jax.tree.leaves(self.state.batch_stats))
    self.rng = jax.random.key(1)
    self.batch = sharding.to_global(make_data(batch, self.num_classes), mesh)

    self.step = functools.partial(train.train_step, blank_id=charset_lib.BLANK_ID)
    step = jax.jit(
        self.step,
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

    self.infer_py = infer
    infer_jit = jax.jit(infer, in_shardings=(repl, repl, split, split), out_shardings=split)
    t = time.perf_counter()
    self.infer_fn = infer_jit.lower(*self._infer_args()).compile()
    self.infer_compile_s = time.perf_counter() - t
    self.infer_flops = self.infer_fn.cost_analysis()["flops"] * self.devices
    self.infer_memory = self.infer_fn.memory_analysis()

  def _infer_args(self) -> tuple:
    s = self.state
    return s.params, s.batch_stats, self.batch["images"], self.batch["widths"]

  def executed_flops(self) -> dict:
    """FLOPs per step that crnn_jax executes, train and infer: XLA's count of the compiled
    programs (``xla_*``), less the multiplications by zero entries of constant matrices
    (the Winograd transforms; ``zeros_*``), found in the jaxprs of the same functions."""
    jax = self.jax
    zeros_train = zero_entry_flops(jax.make_jaxpr(self.step)(self.state, self.batch, self.rng))
    zeros_infer = zero_entry_flops(jax.make_jaxpr(self.infer_py)(*self._infer_args()))
    return {
        "xla_train": self.train_flops,
        "xla_infer": self.infer_flops,
        "zeros_train": zeros_train,
        "zeros_infer": zeros_infer,
        "train": self.train_flops - zeros_train,
        "infer": self.infer_flops - zeros_infer,
    }

  def plain_flops(self) -> tuple[float, float]:
    """XLA's FLOP count of the train step and of the forward pass with plain ``lax``
    convolutions (``conv_impl='xla'``): what a direct convolution executes. From the
    lowered programs' cost analysis; nothing is compiled or run."""
    jax = self.jax
    from crnn_jax import models

    model = models.from_config(self.config.model, self.num_classes).clone(conv_impl="xla")
    state = self.state.replace(apply_fn=model.apply)
    train = jax.jit(self.step).lower(state, self.batch, self.rng).cost_analysis()["flops"]

    def infer(params, batch_stats, images, widths):
      return model.apply(
          {"params": params, "batch_stats": batch_stats}, images, widths, train=False
      )[0]

    return train, jax.jit(infer).lower(*self._infer_args()).cost_analysis()["flops"]

  def train(self, steps: int) -> float:
    loss = None
    for _ in range(steps):
      self.state, metrics = self.train_fn(self.state, self.batch, self.rng)
      loss = metrics["loss"]
    return float(loss)  # waits for the last step (each step needs the one before)

  def infer(self, steps: int) -> None:
    out = None
    for _ in range(steps):
      out = self.infer_fn(*self._infer_args())
    out.block_until_ready()


# PyTorch variants: '+'-joined options of a base dtype ('fp32' or 'bf16', autocast).
TORCH_OPTIONS = ("cl", "fused", "freeze", "compile", "nnpack")
# Options that need float32 without autocast (a traced, frozen copy; NNPACK is float32).
FP32_OPTIONS = ("freeze", "nnpack")


def parse_torch_mode(mode: str) -> tuple[str, set]:
  """'bf16+cl+compile' -> ('bf16', {'cl', 'compile'}); raises ValueError for others."""
  base, *options = mode.split("+")
  if base not in ("fp32", "bf16") or not set(options) <= set(TORCH_OPTIONS):
    raise ValueError(
        f"torch mode {mode!r}: expected fp32 or bf16, optionally followed by "
        f"+{' +'.join(TORCH_OPTIONS)} (e.g. bf16+cl+compile)."
    )
  if base != "fp32" and set(options) & set(FP32_OPTIONS):
    raise ValueError(f"torch mode {mode!r}: +freeze and +nnpack need fp32.")
  if {"freeze", "nnpack"} <= set(options):
    raise ValueError(
        f"torch mode {mode!r}: +freeze and +nnpack exclude each other (the frozen copy's "
        f"convolutions are rewritten for oneDNN)."
    )
  return base, set(options)


class TorchSide:
  """The PyTorch peer on the same data.

  Args:
    mode: see ``parse_torch_mode`` and the module docstring: ``fp32`` or ``bf16``
      (autocast), with ``+cl`` (``channels_last``), ``+fused`` (fused Adam), ``+freeze``
      (inference from a frozen copy of the weights at construction, prepacked),
      ``+compile`` (``torch.compile``; compiled in the first, untimed call) and ``+nnpack``
      (oneDNN off around this side's calls).
    device: 'cpu' or 'cuda'.
  """

  def __init__(
      self, batch: int, num_classes: int, threads: int, device: str = "cpu", mode: str = "fp32"
  ):
    import contextlib
    import copy

    import torch
    import torch_crnn

    base, options = parse_torch_mode(mode)
    if "nnpack" in options and device != "cpu":
      raise ValueError(f"torch mode {mode!r}: NNPACK runs on the CPU only.")
    self.torch = torch
    self.device = device
    self.options = options
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
    # oneDNN off: convolutions go to NNPACK (batch >= 16) and the LSTM to ATen's own.
    self._context = (
        (lambda: torch.backends.mkldnn.flags(enabled=False))
        if "nnpack" in options
        else contextlib.nullcontext
    )
    model = torch.compile(self.model) if "compile" in options else self.model
    autocast = torch.bfloat16 if base == "bf16" else None
    device_type = torch.device(device).type
    self.train_fn = torch_crnn.make_train_step(
        model, autocast=autocast, device_type=device_type, fused="fused" in options
    )
    infer_model = model
    if "freeze" in options:
      frozen = copy.deepcopy(self.model).eval()
      if "compile" in options:
        # Inductor's freezing: weights become constants, prepacked for oneDNN.
        infer_model = torch.compile(frozen, options={"freezing": True})
      else:
        with torch.no_grad():
          traced = torch.jit.trace(frozen, self.images)
        infer_model = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    self.infer_fn = torch_crnn.make_infer(infer_model, autocast=autocast, device_type=device_type)

  def conv_backend(self) -> str:
    """The backend PyTorch picks for the seed's third convolution (128 -> 256 channels,
    3x3, 8 x 32) at this batch size in this mode, e.g. 'Mkldnn' or 'NnpackSpatial'
    (private API: '?' where it is missing)."""
    torch = self.torch
    b = self.images.shape[0]
    x = torch.zeros(b, 128, 8, 32, device=self.images.device, requires_grad=True)
    w = torch.zeros(256, 128, 3, 3, device=self.images.device, requires_grad=True)
    if "cl" in self.options:
      x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    try:
      with self._context():
        backend = torch._C._select_conv_backend(
            x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, None
        )
    except (AttributeError, RuntimeError, TypeError):
      return "?"
    return str(backend).rsplit(".", 1)[-1]

  def _sync(self):
    if self.device != "cpu":
      self.torch.cuda.synchronize()

  def train(self, steps: int) -> float:
    self._sync()
    loss = None
    with self._context():
      for _ in range(steps):
        loss = self.train_fn(self.images, self.labels, self.label_lengths)
    self._sync()
    return float(loss)

  def infer(self, steps: int) -> None:
    self._sync()
    with self._context():
      for _ in range(steps):
        self.infer_fn(self.images)
    self._sync()


_ONEDNN_PROBE = """
import torch
torch.set_num_threads(1)
conv = torch.nn.Conv2d(128, 256, 3, padding=1)
x = torch.rand(16, 128, 8, 32, requires_grad=True)
conv(x).sum().backward()
"""


def onednn_conv_kernels() -> str:
  """The oneDNN convolution kernels PyTorch runs for a 3x3 layer of the seed (forward and
  both gradients, batch 16), as oneDNN's verbose mode names them: e.g. 'jit:avx2', its
  direct convolution for AVX2. Asked in a fresh process; 'unknown' if it says nothing."""
  env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
  done = subprocess.run(
      [sys.executable, "-c", _ONEDNN_PROBE], capture_output=True, text=True, env=env
  )
  kernels = set()
  for line in done.stdout.splitlines():
    # onednn_verbose,...,exec,cpu,convolution,KERNEL,PROPAGATION,...
    parts = line.split(",")
    if ",exec,cpu,convolution," in line:
      kernels.add(parts[parts.index("convolution") + 1])
  return ", ".join(sorted(kernels)) or "unknown"


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


def bench_batch(
    batch: int, args, threads: int, mm: dict, all_ratios: dict, first: bool = False
) -> None:
  """Times every side at one batch size and prints its table; adds the per-round ratios
  against PyTorch's best mode to ``all_ratios`` and re-times the best matmul into ``mm``.
  ``first`` also prints the models' parameter counts."""
  import jax

  gpu = args.device == "gpu"
  many_jax = len(args.jax_dtypes) > 1
  jax_sides = [
      (f"crnn_jax {d}" if many_jax else "crnn_jax", JaxSide(batch, args.conv_impl, d))
      for d in args.jax_dtypes
  ]
  j = jax_sides[0][1]
  torch_sides = [
      (f"PyTorch {m}", TorchSide(batch, j.num_classes, threads, args.torch_device, m))
      for m in args.torch_modes
  ]
  sides = jax_sides + torch_sides
  if first:
    print(
        f"parameters: crnn_jax {j.num_params:,} (and {j.num_stats:,} BatchNorm statistics)"
        + (
            f", PyTorch {torch_sides[0][1].num_params:,} (nn.LSTM's second bias vector "
            f"per gate)"
            if torch_sides
            else ""
        )
    )
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
    # The machine's speed drifts: the best matmul is re-timed once per round.
    mm["rounds"].append(mm["fn"]()[0])
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
    # Against PyTorch's best mode at this batch size, chosen by median, train and infer
    # each on its own.
    best = {
        mode: max((n for n, _ in torch_sides), key=lambda n: med[n, mode]) for mode in ("t", "i")
    }
    ratios = {
        mode: [a / b for a, b in zip(res[jname, mode], res[best[mode], mode])]
        for mode in ("t", "i")
    }
    all_ratios["train"] += ratios["t"]
    all_ratios["infer"] += ratios["i"]
    all_ratios["best_modes"].append(
        f"{batch}: train {best['t'].split()[-1]}, infer {best['i'].split()[-1]}"
    )
    print(
        f"{'ratio':{w}}{_spread(ratios['t']):>30}{_spread(ratios['i']):>30}"
        f"   ({jname} / PyTorch's best: train {best['t'].split()[-1]}, "
        f"infer {best['i'].split()[-1]})"
    )
    if many_jax:
      for mode, what in (("t", "train"), ("i", "infer")):
        bj = max((n for n, _ in jax_sides), key=lambda n: med[n, mode])
        ratio = med[bj, mode] / med[best[mode], mode]
        all_ratios["best_" + what].append(ratio)
        print(
            f"best {what}: {bj} {med[bj, mode]:.0f} img/s, {best[mode]} "
            f"{med[best[mode], mode]:.0f} img/s: {ratio:.2f}x"
        )
    backends = ", ".join(f"{name.split()[-1]} {side.conv_backend()}" for name, side in torch_sides)
    print(f"PyTorch's convolution backend at this batch: {backends}")
  compiled = any("compile" in m for m in args.torch_modes)
  for name, side in jax_sides:
    print(
        f"compile ({name}): train step {side.train_compile_s:.1f} s, inference "
        f"{side.infer_compile_s:.1f} s"
        + ("; PyTorch: none (eager)" if torch_sides and not compiled else "")
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
        f"peak memory: XLA buffers (arguments + temporaries + outputs) {xla}; PyTorch "
        f"resident-set growth over its first step (own process, fp32) train "
        f"{torch_mem['train']:.0f} MB, infer {torch_mem['infer']:.0f} MB"
    )
  else:
    print(f"peak memory: XLA buffers (arguments + temporaries + outputs) {xla}")

  # Executed arithmetic per image, and per second against the best matmul.
  plain_train, plain_infer = j.plain_flops()
  flops = {name: side.executed_flops() for name, side in jax_sides}
  e = flops[jname]
  print(
      f"executed GFLOP/image, train / infer: {jname} {e['train'] / batch / 1e9:.2f} / "
      f"{e['infer'] / batch / 1e9:.2f} (XLA's count of the compiled step "
      f"{e['xla_train'] / batch / 1e9:.2f} / {e['xla_infer'] / batch / 1e9:.2f}, less "
      f"{e['zeros_train'] / batch / 1e9:.2f} / {e['zeros_infer'] / batch / 1e9:.2f} "
      f"multiplications by zero entries of the Winograd transforms); plain convolutions "
      f"(XLA's count with conv_impl='xla'; what "
      + ("PyTorch's oneDNN direct convolution" if not gpu else "PyTorch")
      + f" is counted at) {plain_train / batch / 1e9:.2f} / {plain_infer / batch / 1e9:.2f}"
  )
  for name, side in torch_sides:
    flops[name] = None if "nnpack" in side.options else {"train": plain_train, "infer": plain_infer}
  mm_med = statistics.median(mm["rounds"])
  print(
      f"executed GFLOP/s, train / infer, and their fraction of the best {mm['what']} "
      f"({mm_med:.0f} GFLOP/s, median of {len(mm['rounds'])} timings)"
      + (" (on GPU the counts are plain convolutions', whatever cuDNN runs)" if gpu else "")
      + ":"
  )
  for name, _ in sides:
    f = flops[name]
    if f is None:
      print(f"  {name:{w}}       - (NNPACK picks its own convolution algorithm)")
      continue
    t_rate = f["train"] / batch * med[name, "t"] / 1e9
    i_rate = f["infer"] / batch * med[name, "i"] / 1e9
    print(
        f"  {name:{w}}{t_rate:7.1f} ({t_rate / mm_med:4.0%}) /{i_rate:7.1f} "
        f"({i_rate / mm_med:4.0%})"
    )
  sys.stdout.flush()


DEVICE_DEFAULTS = {
    # CPU: crnn_jax's default dtype against PyTorch plain, with its cheap eager settings,
    # and with those and torch.compile; 3 rounds of 2 steps keep the run near 10 minutes.
    "cpu": {
        "batch_sizes": "64,256",
        "jax_dtypes": "auto",
        "torch_modes": "fp32,fp32+cl+fused+freeze,fp32+cl+fused+freeze+compile",
        "steps": 2,
        "rounds": 3,
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
        "rounds": 5,
        "mm_dtype": "bfloat16",
        "mm_n": 8192,
        "mm_calls": 20,
    },
}


def best_matmul(args, torch) -> dict:
  """Times the matmul of every library at hand and keeps the fastest for the rounds.

  CPU: float32 4096^3 in numpy, PyTorch and JAX; GPU: bfloat16 8192^3 in JAX and PyTorch.
  Returns {'fn': a re-timing function, 'what': its name, 'rounds': its timings so far}.
  """
  n, dtype, calls = args.mm_n, args.mm_dtype, args.mm_calls
  fns = {"jax": lambda r: matmul_gflops(n, r, dtype, calls)}
  if args.device == "cpu":
    fns["numpy"] = lambda r: numpy_matmul_gflops(n, r)
    if torch is not None:
      fns["torch"] = lambda r: torch_cpu_matmul_gflops(n, r)
  elif torch is not None:
    fns["torch"] = lambda r: torch_matmul_gflops(n, r, calls)
  times = {name: fn(3) for name, fn in fns.items()}
  best = max(times, key=lambda name: statistics.median(times[name]))
  print(
      f"{dtype} {n}^3 matmul, GFLOP/s (median of 3): "
      + ", ".join(f"{name} {statistics.median(t):.0f}" for name, t in times.items())
      + f"; the best, {best}, is re-timed every round"
  )
  return {
      "fn": lambda: fns[best](1),
      "what": f"{dtype} {n}^3 matmul ({best})",
      "rounds": list(times[best]),
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
  parser.add_argument("--rounds", type=int, help="timed A/B rounds per batch size (cpu: 3, gpu: 5)")
  parser.add_argument("--steps", type=int, help="steps per timed run (cpu: 2, gpu: 20)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed runs per side first")
  parser.add_argument("--conv-impl", default="auto", help="crnn_jax model.conv_impl")
  parser.add_argument(
      "--jax-dtypes",
      help="comma-separated crnn_jax model.compute_dtype "
      "values (cpu: auto, gpu: float32,bfloat16)",
  )
  parser.add_argument(
      "--torch-modes",
      help="comma-separated PyTorch variants: fp32 or bf16 (autocast), with +cl "
      "(channels_last), +fused (fused Adam), +freeze (frozen, prepacked inference copy), "
      "+compile (torch.compile), +nnpack (oneDNN off: NNPACK's convolutions); 'none' skips "
      "PyTorch (cpu: fp32,fp32+cl+fused+freeze,fp32+cl+fused+freeze+compile; gpu: "
      "fp32,bf16,bf16+cl,bf16+cl+compile)",
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
  for name in ("batch_sizes", "jax_dtypes", "torch_modes", "steps", "rounds"):
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
  peer = "no torch"
  if torch is not None:
    torch.set_num_threads(threads)
    peer = f"torch {torch.__version__} with {threads} threads"
    if args.device == "cpu":
      peer += (
          f" (oneDNN available: {torch.backends.mkldnn.is_available()}, its 3x3 "
          f"convolution kernels here: {onednn_conv_kernels()}; NNPACK available: "
          f"{torch.backends.nnpack.is_available()})"
      )
  print(
      f"machine: {threads} cores ({_cpu_name()}); jax {jax.__version__} on "
      f"{jax.devices()[0].platform}"
      + (f" ({jax.devices()[0].device_kind})" if args.device == "gpu" else "")
      + f", {peer}; malloc: {args.malloc}"
      + (f"; TF32 {args.tf32} on both sides" if args.device == "gpu" else "")
  )
  mm = best_matmul(args, torch if args.torch_modes else None)
  ratios = {"train": [], "infer": [], "best_train": [], "best_infer": [], "best_modes": []}
  for i, batch in enumerate(int(b) for b in args.batch_sizes.split(",")):
    bench_batch(batch, args, threads, mm, ratios, first=i == 0)
  print(f"\ntook {time.perf_counter() - start:.0f} s")
  if ratios["best_train"]:
    print(
        f"best against best: train {', '.join(f'{r:.2f}' for r in ratios['best_train'])}, "
        f"infer {', '.join(f'{r:.2f}' for r in ratios['best_infer'])} (per batch size)"
    )
  if ratios["train"]:
    print(f"PyTorch's best mode per batch size: {'; '.join(ratios['best_modes'])}")
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
