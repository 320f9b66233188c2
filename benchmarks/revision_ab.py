"""Training speed of two revisions of crnn_jax, side by side in one invocation.

The regression check for a change: each revision's own ``benchmarks/train_speed.py``
builds its seed-model training step (``JaxSide``: configs/base.py, random uint8 images of
full width) in a worker process of its own, and the rounds alternate between the two
workers, which goes first alternating too, so that a machine that speeds up or slows down
during the run affects both alike. Between two invocations of train_speed.py on a shared
2-core VM, both crnn_jax and PyTorch have moved by 30% or more; within one run of this
script the two revisions see the same machine.

Both workers get glibc's "reuse freed memory" settings (as scripts/train.py runs), here
through glibc's environment variables so that revisions that predate crnn_jax.memory get
them too. Compilation and two warm-up steps are excluded.

    .venv/bin/python benchmarks/revision_ab.py --base 44311c4            # against the tree
    .venv/bin/python benchmarks/revision_ab.py --base 44311c4 --head HEAD --batch 256

Prints images/s per round, the medians, and ``ratio head/base=X`` (the median of the
per-round ratios; 1.00 is no change).
"""

import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from crnn_jax import cli  # noqa: E402

# What a worker runs: build the step, answer "N" with N steps' wall time, "" ends it.
_WORKER = """
import sys, time
sys.path[:0] = [".", "benchmarks"]
import train_speed
side = train_speed.JaxSide({batch}, "auto")
side.train(2)  # compile and warm up
print("ready", flush=True)
for line in sys.stdin:
  if not line.strip():
    break
  t = time.perf_counter()
  side.train(int(line))
  print(time.perf_counter() - t, flush=True)
"""

# glibc's tunables for crnn_jax.memory.reuse_freed_memory's mallopt calls.
_REUSE = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
}


def export_tree(rev: str, into: str) -> str:
  """The files of ``rev`` (``git archive``) in a new folder under ``into``."""
  path = os.path.join(into, rev.replace("/", "_"))
  os.makedirs(path)
  archive = os.path.join(into, f"{os.path.basename(path)}.tar")
  subprocess.run(["git", "archive", "--format=tar", "-o", archive, rev], cwd=REPO, check=True)
  with tarfile.open(archive) as tar:
    tar.extractall(path, filter="data")
  return path


class Worker:
  """One revision's training step in its own process."""

  def __init__(self, name: str, tree: str, batch: int):
    self.name, self.batch = name, batch
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=tree, CRNN_JAX_MALLOC="system", **_REUSE)
    env.pop("XLA_FLAGS", None)
    self.proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER.format(batch=batch)],
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = self.proc.stdout.readline()
    if line.strip() != "ready":
      self.proc.kill()
      raise RuntimeError(f"{name}: the worker did not start (its output: {line!r})")

  def images_per_s(self, steps: int) -> float:
    self.proc.stdin.write(f"{steps}\n")
    self.proc.stdin.flush()
    return steps * self.batch / float(self.proc.stdout.readline())

  def close(self) -> None:
    self.proc.stdin.write("\n")
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def main(argv=None) -> None:
  parser = cli.parser(__doc__, __file__)
  parser.add_argument("--base", required=True, help="the revision to compare against")
  parser.add_argument(
      "--head", default=None, help="a second revision; default: the working tree as it is"
  )
  parser.add_argument("--batch", type=int, default=64, help="images per training step")
  parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
  parser.add_argument("--steps", type=int, default=2, help="training steps per side per round")
  args = parser.parse_args(argv)

  t0 = time.time()
  with tempfile.TemporaryDirectory(prefix="crnn_jax_ab_") as tmp:
    head_tree = REPO if args.head is None else export_tree(args.head, tmp)
    # Started one after the other: two compilations at once would only slow both.
    workers = [
        Worker(f"base {args.base}", export_tree(args.base, tmp), args.batch),
        Worker(f"head {args.head or 'working tree'}", head_tree, args.batch),
    ]
    rates = {w.name: [] for w in workers}
    print(f"batch {args.batch}, {args.rounds} rounds of {args.steps} step(s) per side; images/s")
    print(f"{'round':>5}  " + "  ".join(f"{w.name:>24}" for w in workers))
    for r in range(args.rounds):
      order = workers if r % 2 == 0 else workers[::-1]
      got = {w.name: w.images_per_s(args.steps) for w in order}
      for w in workers:
        rates[w.name].append(got[w.name])
      print(f"{r + 1:>5}  " + "  ".join(f"{got[w.name]:>24.1f}" for w in workers), flush=True)
    for w in workers:
      w.close()
  base, head = (rates[w.name] for w in workers)
  print(f"{'median':>5}  {statistics.median(base):>24.1f}  {statistics.median(head):>24.1f}")
  ratio = statistics.median(h / b for h, b in zip(head, base))
  print(f"took {time.time() - t0:.0f} s")
  print(f"ratio head/base={ratio:.2f}")


if __name__ == "__main__":
  main()
