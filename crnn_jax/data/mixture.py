"""Mixture specs: several sources in one ``data.train`` (sampled by weight) or one
``data.eval`` (evaluated one by one).

Syntax: members separated by ``|``, each an ordinary spec with an optional weight after
the last ``@``::

    synth:inf,difficulty=1 @ 3 | tsv:data/real_crops @ 1

draws three rendered words for every real crop, in expectation. A plain spec is a
mixture of one. Weights are relative and must be positive; spaces around ``|`` and ``@``
are ignored. For evaluation each member is a separate set (weights are not allowed).
Which rows each member fills is decided by ``plan.SamplingPlan``, deterministically.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Member:
  spec: str
  weight: float = 1.0


def parse(text: str, *, what: str = "data.train", weights: bool = True) -> list[Member]:
  """The members of a mixture spec.

  Args:
    text: ``SPEC[@W] | SPEC[@W] | ...``.
    what: the config field, for error messages.
    weights: whether ``@W`` is allowed (not for evaluation sets).

  Raises:
    ValueError: for an empty member, a weight that is not a positive number, a weight
      where none is allowed, or the same spec twice; the message names the member.
  """
  members = []
  for part in text.split("|"):
    part = part.strip()
    spec, weight = part, 1.0
    head, at, tail = part.rpartition("@")
    if at and _is_number(tail):
      if not weights:
        raise ValueError(
            f"{what}: {part!r} has a weight; evaluation sets are evaluated "
            f"one by one, so write them without '@W'."
        )
      spec, weight = head.strip(), float(tail)
      if not weight > 0:
        raise ValueError(
            f"{what}: member {spec!r} has weight {tail.strip()}; weights must "
            f"be positive numbers."
        )
    if not spec:
      raise ValueError(f"{what}: {text!r} has an empty member; write SPEC[@W] | SPEC[@W].")
    if any(m.spec == spec for m in members):
      raise ValueError(
          f"{what}: {spec!r} appears twice; give it one member with the " f"summed weight."
      )
    members.append(Member(spec, weight))
  return members


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True
