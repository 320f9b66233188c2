"""Spec strings -> sources: the entry of the data path.

``open_source(spec)`` parses ``KIND:REST`` and opens the source of that kind:
``synth:`` and ``tsv:`` (``readers``), ``mjsynth:`` and ``lmdb:`` (``formats``),
``tfds:`` (``tfds_source``, imported only for that kind, as TFDS is slow to import).
Mixtures of specs (``SPEC @ W | SPEC @ W``) are split by ``mixture.parse`` first.
"""

from __future__ import annotations

import os

from crnn_jax.data import formats, readers
from crnn_jax.data.base import Source, parse_options

KINDS = ("synth", "tsv", "mjsynth", "lmdb", "tfds")


def open_source(spec: str, *, height: int = 32, charset: str | None = None) -> Source:
  """The source a spec string names.

  Args:
    spec: ``synth:N|inf[,seed=S][,difficulty=D][,soft=P][,extrude=P]``, ``tsv:PATH[,include=F][,exclude=F]``,
      ``mjsynth:PATH[,split=S]``, ``lmdb:PATH`` or
      ``tfds:NAME[/CONFIG][:SPLIT][,data_dir=DIR]``.
    height: render height for synthetic data.
    charset: characters synthetic text may use (default: the renderer's).

  Raises:
    ValueError: for an unknown kind or malformed spec, naming it and the kinds known.
  """
  kind, sep, rest = spec.partition(":")
  if not sep:
    raise ValueError(
        f"Dataset spec {spec!r} has no kind: use synth:N[,seed=S], tsv:PATH, mjsynth:PATH, "
        f"lmdb:PATH or tfds:NAME[/CONFIG][:SPLIT]; mixtures: SPEC @ W | SPEC @ W."
    )
  if kind == "synth":
    head, opts = parse_options(rest, spec)
    unknown = set(opts) - {"seed", "difficulty", "workers", "soft", "extrude"}
    if unknown:
      raise ValueError(
          f"Dataset spec {spec!r}: unknown option(s) {sorted(unknown)}; "
          f"synth takes seed, difficulty, workers, soft, extrude."
      )
    try:
      n = None if head.strip() == "inf" else int(head)
      seed = int(opts.get("seed", 0))
      difficulty = float(opts["difficulty"]) if "difficulty" in opts else None
      workers = int(opts["workers"]) if "workers" in opts else None
      looks = {k: float(opts[k]) for k in ("soft", "extrude") if k in opts}
    except ValueError:
      raise ValueError(
          f"Dataset spec {spec!r}: expected synth:N[,seed=S][,difficulty=D] "
          f"with integer N (or inf) and S."
      ) from None
    if n is not None and n < 1:
      raise ValueError(f"Dataset spec {spec!r}: N must be at least 1.")
    return readers.SynthSource(
        n,
        seed=seed,
        height=height,
        difficulty=difficulty,
        charset=charset,
        num_workers=workers,
        **looks,
    )
  if kind == "tsv":
    path, opts = parse_options(rest, spec)
    unknown = set(opts) - {"include", "exclude"}
    if unknown:
      raise ValueError(
          f"Dataset spec {spec!r}: unknown option(s) {sorted(unknown)}; "
          f"tsv takes include=FILE and exclude=FILE."
      )
    return readers.TsvSource(
        os.path.expanduser(path),
        include=opts.get("include"),
        exclude=opts.get("exclude"),
        spec=spec,
    )
  if kind == "mjsynth":
    path, opts = parse_options(rest, spec)
    unknown = set(opts) - {"split"}
    if unknown:
      raise ValueError(
          f"Dataset spec {spec!r}: unknown option(s) {sorted(unknown)}; "
          f"mjsynth takes split=train|val|test."
      )
    return formats.MJSynthSource(path, opts.get("split", "train"))
  if kind == "lmdb":
    return formats.LmdbSource(rest)
  if kind == "tfds":
    from crnn_jax.data import tfds_source  # TFDS imports slowly: only for this kind

    name, split, opts = tfds_source.parse_tfds_spec(rest, spec)
    return tfds_source.TfdsSource(
        name,
        split,
        data_dir=opts.get("data_dir"),
        image_key=opts.get("image"),
        label_key=opts.get("label"),
    )
  raise ValueError(
      f"Dataset spec {spec!r}: unknown kind {kind!r}; known kinds: synth, tsv, "
      f"mjsynth, lmdb, tfds."
  )
