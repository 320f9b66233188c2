"""Data benchmarks: python benchmarks/data.py [--section render|pipeline|feed|all] [options]

Prints one table per section.

Renderer section (--images N, --warmup N, --workers K, --trdg-images N, --no-trdg); rows
(crnn_jax.data.render, height 32, difficulty 1):
  * render, 1 process, cold: the first --warmup images of a fresh renderer (glyph caches
    filling; fonts already checked).
  * render, 1 process, warm: the next --images images.
  * render_range, K workers: --images * K images through render.iter_range (spawn workers,
    start-up included) and the rate over its second half (steady state).
  * trdg (TextRecognitionDataGenerator 1.8, 1 process, 32 px, GeneratorFromDict with its
    defaults): the same --warmup images untimed first, as ours, then --trdg-images timed
    (fewer than --images because it is much slower; a rate per image either way). Run with
    the Python of a separate venv ($TRDG_PYTHON, default /tmp/trdg-venv/bin/python)
    because trdg needs Pillow < 10; the row says why when it cannot run.
What differs, besides the code: trdg's defaults draw dark grey text (#282828) on a
Gaussian-noise background, with no skew, blur or distortion, cycling through its bundled
fonts (the row gives how many); ours at difficulty 1 draws from ~80 font families with
random geometry, colours, photo and texture backgrounds and degradations (docs/data.md).
The target is 1,000 images/s for two processes (500 per process). The machine is shared and
its speed drifts: compare rows of one invocation only; the load average is printed first.

Besides wall-clock images/s, each row gives images per CPU-second of the processes doing the
work (user + system time): on a machine shared with other jobs the wall rate drops with the
load, the CPU rate much less. Every figure is measured; nothing is projected.

Each benchmark is a function returning rows (name, images/s, images per CPU-second, note);
add new ones to BENCHMARKS.

Pipeline section (--pipeline-spec, --batch, --steps, --pipeline-workers): from a built TFDS
dataset (default: synth_words with --pipeline-build images, built into --pipeline-dir when
missing) into device arrays (`jax.device_put`, waited for), at --batch images per step:
  * cached, build_index: read + decode + resize the whole split (start-up cost).
  * cached, batches -> device: steady-state batches from memory.
  * read per batch, build_index: the header-only start-up pass.
  * read per batch, in-process (2 threads) -> device.
  * read per batch, K grain worker processes -> device (worker start-up included, and without).
Target: 5,000 images/s into device arrays, so the input never starves a GPU-sized step.

Feed section (--feed-batch, --feed-steps, --feed-workers): per worker count, the images/s
of words rendered while training (synth:inf through the training loader) next to the seed
network's training images/s, both measured in this invocation (see bench_feed).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402

TARGET_PER_PROCESS = 500.0
TRDG_PYTHON = os.environ.get("TRDG_PYTHON", "/tmp/trdg-venv/bin/python")
TRDG_SETUP = (
    "python3 -m venv /tmp/trdg-venv && /tmp/trdg-venv/bin/pip install trdg==1.8.0 'pillow<10'"
)

Row = tuple[str, float | None, float | None, str]


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


def bench_render_single(args: argparse.Namespace) -> list[Row]:
  """One process: cold (caches filling) then warm images/s."""
  from crnn_jax.data import render

  renderer = render.Renderer(seed=0, height=32, difficulty=1.0).prepare()
  rows = []
  for name, indices, note in (
      (f"render, 1 process, cold ({args.warmup} images)", range(args.warmup), "caches filling"),
      (
          f"render, 1 process, warm ({args.images} images)",
          range(args.warmup, args.warmup + args.images),
          "",
      ),
  ):
    start, cpu = time.perf_counter(), _cpu()
    for i in indices:
      renderer.render(i)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    rows.append((name, len(indices) / wall, len(indices) / cpu, note))
  return rows


def bench_render_workers(args: argparse.Namespace) -> list[Row]:
  """render.iter_range with worker processes, start-up included.

  (No "second half" rate: the workers fill their prefetch buffer ahead of the reader, so
  images counted after any point in the run were partly made before it.)
  """
  from crnn_jax.data import render

  total = args.images * args.workers
  start, cpu = time.perf_counter(), _cpu() + _cpu(resource.RUSAGE_CHILDREN)
  for _ in render.iter_range(0, 0, total, height=32, num_workers=args.workers):
    pass
  end = time.perf_counter()
  # The workers have exited (iter_range waits for them), so their time is counted.
  cpu = _cpu() + _cpu(resource.RUSAGE_CHILDREN) - cpu
  overall = total / (end - start)
  return [
      (
          f"render_range, {args.workers} workers ({total} images)",
          overall,
          total / cpu,
          "incl. start-up; CPU of parent + workers",
      ),
  ]


_TRDG_SCRIPT = """
import json, sys, time, warnings
warnings.filterwarnings('ignore')
from trdg.generators import GeneratorFromDict
warmup, n = int(sys.argv[1]), int(sys.argv[2])
gen = GeneratorFromDict(count=warmup + n, size=32)
it = iter(gen)
for _ in range(warmup):
    next(it)  # untimed, as our renderer's cold images
start, cpu = time.perf_counter(), time.process_time()
for _ in range(n):
    image, label = next(it)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
inner = getattr(gen, "generator", gen)
print(json.dumps({"images_per_s": n / wall, "images_per_cpu_s": n / cpu, "height": image.size[1],
                  "fonts": len(getattr(inner, "fonts", [])),
                  "background_type": getattr(inner, "background_type", None)}))
"""


def bench_trdg(args: argparse.Namespace) -> list[Row]:
  """trdg's images/s in its own venv (it needs Pillow < 10), or why it was not measured."""
  name = "trdg 1.8, 1 process (GeneratorFromDict, size=32)"
  if args.no_trdg:
    return [(name, None, None, "skipped (--no-trdg)")]
  if not os.path.exists(TRDG_PYTHON):
    return [(name, None, None, f"not measured: no {TRDG_PYTHON}; set up with: {TRDG_SETUP}")]
  try:
    done = subprocess.run(
        [TRDG_PYTHON, "-c", _TRDG_SCRIPT, str(args.warmup), str(args.trdg_images)],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
  except subprocess.TimeoutExpired:
    return [(name, None, None, "not measured: timed out after 1800 s")]
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return [(name, None, None, f"not measured: trdg failed: {error[:120]}")]
  result = json.loads(lines[-1])
  background = {0: "Gaussian noise", 1: "plain white", 2: "quasicrystal", 3: "pictures"}
  note = (
      f"{args.trdg_images} images after {args.warmup} untimed, height {result['height']}, "
      f"{result['fonts']} font files, background "
      f"{background.get(result['background_type'], result['background_type'])}"
  )
  return [(name, result["images_per_s"], result["images_per_cpu_s"], note)]


BENCHMARKS = (bench_render_single, bench_render_workers, bench_trdg)

PIPELINE_TARGET = 5000.0
PipelineRow = tuple[str, float | None, float | None, int, str]  # + processes doing the work


def _pipeline_spec(args: argparse.Namespace) -> str:
  """The --pipeline-spec, or a synth_words dataset built (once) in --pipeline-dir."""
  if args.pipeline_spec:
    return args.pipeline_spec
  from crnn_jax.data import synth_words

  n = args.pipeline_build
  builder = synth_words.SynthWords(
      num_train=n, num_validation=100, seed=0, data_dir=args.pipeline_dir
  )
  if not builder.is_prepared():
    print(f"  building synth_words ({n} images) in {args.pipeline_dir} ...", file=sys.stderr)
    builder.download_and_prepare()
  name = f"synth_words/{builder.builder_config.name}"
  return f"tfds:{name}:train,data_dir={args.pipeline_dir}"


def _to_device(batch: dict) -> None:
  import jax

  jax.block_until_ready(jax.device_put(batch))


def bench_pipeline(args: argparse.Namespace) -> list[PipelineRow]:
  """Cached and read-per-batch sources, from a built TFDS dataset into device arrays."""
  from crnn_jax.charset import Charset
  from crnn_jax.data import index as index_lib
  from crnn_jax.data import loader, plan, specs

  spec = _pipeline_spec(args)
  source = specs.open_source(spec)
  kw = dict(charset=Charset(), height=32, width_buckets=(64, 128, 192, 256))
  rows: list[PipelineRow] = []
  children = resource.RUSAGE_CHILDREN

  def epoch_loader(idx, workers: int, threads: int) -> loader.TrainLoader:
    idx = idx.merge_up(idx.counts(), args.batch)
    p = plan.EpochPlan(idx.counts(), args.batch, 0, idx.counts(), spec)
    return loader.TrainLoader(
        [loader.Feed(source, idx)],
        p,
        widths=idx.widths,
        frames=idx.frames,
        batch_size=args.batch,
        charset=kw["charset"],
        height=32,
        num_workers=workers,
        num_threads=threads,
        prefetch=2,
    )

  start, cpu = time.perf_counter(), _cpu()
  cached = index_lib.build_index(source, cache=True, **kw)
  wall, cpu = time.perf_counter() - start, _cpu() - cpu
  rows.append(
      (
          f"cached, build_index ({len(source)} images)",
          len(source) / wall,
          len(source) / cpu,
          1,
          "start-up: read + decode + resize all",
      )
  )
  batches = epoch_loader(cached, 0, 1)
  _to_device(batches.batch(0))  # first transfer outside the timing
  n = args.steps * args.batch
  start, cpu = time.perf_counter(), _cpu()
  for step in range(1, args.steps + 1):
    _to_device(batches.batch(step))
  wall, cpu = time.perf_counter() - start, _cpu() - cpu
  rows.append(
      (f"cached, batches -> device ({n} images)", n / wall, n / cpu, 1, f"batch {args.batch}")
  )

  start, cpu = time.perf_counter(), _cpu()
  headers = index_lib.build_index(source, cache=False, **kw)
  wall, cpu = time.perf_counter() - start, _cpu() - cpu
  rows.append(
      (
          f"read per batch, build_index ({len(source)} images)",
          len(source) / wall,
          len(source) / cpu,
          1,
          "start-up: labels + image headers",
      )
  )

  it = epoch_loader(headers, 0, 2)(0)
  _to_device(next(it))
  start, cpu = time.perf_counter(), _cpu()
  for _ in range(args.steps):
    _to_device(next(it))
  wall, cpu = time.perf_counter() - start, _cpu() - cpu
  it.close()
  rows.append(
      (
          f"read per batch, in-process, 2 threads -> device ({n} images)",
          n / wall,
          n / cpu,
          1,
          "decode + resize per batch",
      )
  )

  k = args.pipeline_workers
  start, cpu = time.perf_counter(), _cpu() + _cpu(children)
  it = epoch_loader(headers, k, 1)(0)
  _to_device(next(it))
  # Batches prepared while the workers started would flatter the steady state: drain them.
  buffered = 2 * (k + 1) * 2
  for _ in range(buffered):
    _to_device(next(it))
  first = time.perf_counter()
  for _ in range(args.steps):
    _to_device(next(it))
  end = time.perf_counter()
  it.close()
  cpu = _cpu() + _cpu(children) - cpu  # workers have exited: their time is counted
  total = n + (buffered + 1) * args.batch
  rows.append(
      (
          f"read per batch, {k} worker processes -> device ({n} images)",
          n / (end - first),
          None,
          k + 1,
          f"steady state, after {buffered + 1} batches",
      )
  )
  rows.append(
      (
          f"read per batch, {k} worker processes, incl. start-up ({total})",
          total / (end - start),
          total / cpu if cpu > 0 else None,
          k + 1,
          "CPU of parent + workers",
      )
  )
  return rows


def bench_feed(args: argparse.Namespace) -> list[tuple[str, float, str]]:
  """Rendered-while-training batches per worker count next to the seed network's training.

  Both are measured in this invocation, one after the other, on this machine: the seed
  model's jitted train step at --feed-batch images of 32 x 128 (warm, the median of
  --feed-steps steps), and the loader of ``synth:inf`` with configs/base.py's buckets
  producing batches of the same size with 0, 1, 2, ... worker processes (steady state:
  the batches prepared during start-up are drained first). A ratio above 1 means the
  renderer keeps ahead of training. The loader rows run while nothing trains, so they
  show what rendering alone can deliver; rendering in workers takes CPU from a step that
  runs at the same time (see docs/data.md for the end-to-end figures).
  """
  import functools

  import jax
  import numpy as np

  from configs import base
  from crnn_jax import inputs, models, sharding, train
  from crnn_jax.charset import Charset

  config = base.get_config()
  config.train.batch_size = args.feed_batch
  config.data.train = "synth:inf,seed=0"
  charset = Charset()
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.from_config(config.model, charset.num_classes)
  state = jax.jit(functools.partial(train.create_train_state, config, model))(jax.random.key(0))
  step = jax.jit(train.train_step, donate_argnums=0)
  loader = inputs.train_loader(config, charset, log=lambda _: None)
  batch = sharding.to_global(loader.batch(0), mesh)
  state, m = step(state, batch, jax.random.key(1))  # compile
  jax.block_until_ready(m)
  times = []
  for _ in range(args.feed_steps):
    start = time.perf_counter()
    state, m = step(state, batch, jax.random.key(1))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - start)
  train_rate = args.feed_batch / float(np.median(times))
  rows = [
      (
          "seed network, train step (images/s)",
          train_rate,
          f"batch {args.feed_batch} x 32 x 128, median of {args.feed_steps} steps",
      )
  ]
  for workers in args.feed_workers:
    config.data.num_workers = workers
    it = inputs.train_loader(config, charset, log=lambda _: None)(0)
    for _ in range(2 * max(workers, 1) + 1):  # start-up and what it prepared meanwhile
      next(it)
    count = max(4, args.feed_steps)
    start = time.perf_counter()
    for _ in range(count):
      next(it)
    rate = count * args.feed_batch / (time.perf_counter() - start)
    it.close()
    rows.append(
        (
            f"synth:inf rendered, {workers} worker(s) (images/s)",
            rate,
            f"{rate / train_rate:.1f}x the training rate",
        )
    )
  return rows


def print_pipeline_table(rows: list[PipelineRow]) -> None:
  print(
      f"{'pipeline benchmark':58s} {'images/s':>8s} {'vs 5k/s':>8s} {'per CPU-s':>9s}"
      f" {'procs':>5s}  note"
  )
  for name, rate, cpu_rate, processes, note in rows:
    cells = [
        f"{rate:8.0f}" if rate is not None else f"{'-':>8s}",
        f"{rate / PIPELINE_TARGET:7.2f}x" if rate is not None else f"{'-':>8s}",
        f"{cpu_rate:9.0f}" if cpu_rate is not None else f"{'-':>9s}",
        f"{processes:5d}",
    ]
    print(f"{name:58s} {' '.join(cells)}  {note}")
  print(f"target: {PIPELINE_TARGET:.0f} images/s into device arrays")


def main(argv=None) -> None:
  p = cli.parser(__doc__, __file__)
  p.add_argument("--images", type=int, default=5000, help="images per measured process")
  p.add_argument("--warmup", type=int, default=5000, help="cold images before the warm run")
  p.add_argument("--workers", type=int, default=2, help="worker processes for render_range")
  p.add_argument(
      "--trdg-images", type=int, default=1250, help="timed trdg images, after --warmup untimed"
  )
  p.add_argument("--no-trdg", action="store_true", help="skip the trdg comparison")
  p.add_argument("--section", choices=("render", "pipeline", "feed", "all"), default="all")
  p.add_argument("--feed-batch", type=int, default=64, help="images per step (feed section)")
  p.add_argument("--feed-steps", type=int, default=5, help="timed steps (feed section)")
  p.add_argument(
      "--feed-workers",
      type=int,
      nargs="+",
      default=[0, 1, 2],
      help="worker counts to measure (feed section)",
  )
  p.add_argument(
      "--pipeline-spec",
      default=None,
      help="tfds:... spec to read (default: build synth_words in --pipeline-dir)",
  )
  p.add_argument(
      "--pipeline-dir",
      default="/tmp/crnn_jax_bench_tfds",
      help="TFDS data dir for the default dataset",
  )
  p.add_argument("--pipeline-build", type=int, default=10000, help="images in the default dataset")
  p.add_argument("--batch", type=int, default=256, help="images per step (per host)")
  p.add_argument("--steps", type=int, default=30, help="timed steps per pipeline row")
  p.add_argument(
      "--pipeline-workers", type=int, default=2, help="grain worker processes for the streaming row"
  )
  args = p.parse_args(argv)

  print(
      f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
      f"cores: {os.cpu_count()}",
      flush=True,
  )
  if args.section in ("render", "all"):
    rows: list[Row] = []
    for bench in BENCHMARKS:
      rows.extend(bench(args))
      print(f"  ran {bench.__name__}", file=sys.stderr, flush=True)

    header = f"{'benchmark':52s} {'images/s':>8s} {'vs target':>9s} {'per CPU-s':>9s}"
    print(header + "  note")
    for name, rate, cpu_rate, note in rows:
      processes = args.workers if "workers" in name else 1
      target = TARGET_PER_PROCESS * processes
      cells = [
          f"{rate:8.0f}" if rate is not None else f"{'-':>8s}",
          f"{rate / target:8.2f}x" if rate is not None else f"{'-':>9s}",
          f"{cpu_rate:9.0f}" if cpu_rate is not None else f"{'-':>9s}",
      ]
      print(f"{name:52s} {' '.join(cells)}  {note}")
    print(f"target: {TARGET_PER_PROCESS:.0f} images/s per process")
  if args.section in ("pipeline", "all"):
    rows = bench_pipeline(args)
    print(f"  ran {bench_pipeline.__name__}", file=sys.stderr, flush=True)
    print_pipeline_table(rows)
  if args.section in ("feed", "all"):
    rows = bench_feed(args)
    print(f"{'feed benchmark':52s} {'images/s':>8s}  note")
    for name, rate, note in rows:
      print(f"{name:52s} {rate:8.1f}  {note}")
  print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
