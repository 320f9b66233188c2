"""Stage 4 of the pretrained model: stage 2's shipped weights trained on with the IC15
crops that stages 1-3 left out, more IC15 in the mixture and a longer, lower cosine.

Stages 1-3 skipped every label with a character outside the 62 of the charset: 372 of the
3,968 IC15 training crops ("Joe's", "$4.00", "one-north"). The scene-text protocol reads
such a word without its punctuation ("joes"), and 41 of the 500 IC15-val crops are of this
kind, of which the shipped model reads 12. ``data.unknown_chars='drop'`` trains on these
crops with the label the protocol expects. IC15-val is the set furthest below its goal,
so its share of each batch rises from 25% to 30% (rendered words 55% -> 50%). Stage 3
(1,000 steps at 5e-4) showed that more of stage 2's recipe alone no longer moves the
validation sets; this stage is 2,000 steps from a peak of 3e-4.

Everything else is configs/pretrain.py's: the seed network, augmentation 0.5, width
buckets, validation splits (the evaluation sets use 'drop' too, so the trainer now counts
499 of IC15-val's 500 crops and all 257 of SVT-val, as evaluate.py does but for one IC15
label of punctuation only). Rendered words and the data order use seed 3.

Run (niced, in the background, resumable like any run):
  git show 90d42b8:crnn_jax/pretrained/crnn_seed.npz > /tmp/stage2.npz
  CRNN_PRETRAIN_STAGE2=/tmp/stage2.npz nice -n 19 python scripts/train.py \\
      --config configs/pretrain_stage4.py --workdir ~/runs/pretrain_stage4
"""

from configs import pretrain, pretrain_stage3


def get_config():
  config = pretrain_stage3.get_config()  # checks CRNN_PRETRAIN_STAGE2, sets init_from
  config.data.train = " | ".join(
      [
          "synth:inf,seed=3,difficulty=1 @ 0.5",
          pretrain.real_spec("iiit5k_train", "exclude", "iiit5k_val") + " @ 0.2",
          pretrain.real_spec("ic15_train", "exclude", "ic15_val") + " @ 0.3",
      ]
  )
  config.data.unknown_chars = "drop"
  config.train.seed = 3
  config.optim.learning_rate = 3e-4
  config.optim.warmup_steps = 100
  # 2,000 steps (128,000 images): under an hour on an idle 2-core CPU. Planned as 2,500
  # and shortened at step 516 to fit the session beside development work: the run was
  # stopped with SIGTERM and resumed from its step-516 checkpoint; from there the cosine
  # follows 2,000 steps.
  config.train.num_steps = 2_000
  return config
