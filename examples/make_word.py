"""Regenerate examples/word.png: python examples/make_word.py.

The example image is one word drawn by the project's own renderer (no dataset image is
shipped): ``Renderer(seed=SEED, height=32, difficulty=0.3).render(INDEX)``, upscaled x2
with Lanczos so it looks like a crop of a photo, saved as an RGB PNG. The pretrained
model should read it as ``WORD`` (tests/test_weights.py checks this once the model ships):

  python scripts/predict.py examples/word.png

The rendering depends on the installed fonts (the fontpkg-* packages of pyproject.toml),
so the script stops if they draw another word than ``WORD``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEED = 2024
INDEX = 28
WORD = "HOLIDAY"
SCALE = 2
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "word.png")


def main() -> int:
  from PIL import Image

  from crnn_jax.data.render import Renderer

  image, text = Renderer(seed=SEED, height=32, difficulty=0.3).render(INDEX)
  if text != WORD:
    print(
        f"error: Renderer(seed={SEED}).render({INDEX}) drew {text!r}, not {WORD!r}: the "
        f"installed fonts or word list differ from pyproject.toml's.",
        file=sys.stderr,
    )
    return 1
  height, width = image.shape[:2]
  Image.fromarray(image).resize((width * SCALE, height * SCALE), Image.LANCZOS).save(
      PATH, optimize=True
  )
  print(f"{PATH}: {text!r}, {width * SCALE}x{height * SCALE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
