"""The seed CRNN: 32x128 grayscale, 62 characters, batch 256, Adam 1e-3.

Run:
  python scripts/train.py --config configs/base.py --workdir runs/base

The model is the tutorial's network exactly (6,617,663 parameters plus 2,048
BatchNorm statistics with 63 classes). MJSynth cannot be downloaded here, so the
data default to the project's renderer: 135k training and 15k validation words,
the seed's split sizes. On a 2-core CPU this is a long run; see configs/quick.py.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  # Image height the model is built for; the data path resizes every image to it.
  config.model.height = 32
  # Channel widths of the seven convolutions (seed layout, pools fixed).
  config.model.conv_features = (64, 128, 256, 256, 512, 512, 512)
  # Units per direction of each bidirectional LSTM.
  config.model.lstm_hidden = 128
  # Number of bidirectional LSTM layers.
  config.model.lstm_layers = 2
  # Input dropout of each BiLSTM layer (Keras LSTM dropout=0.2 in the seed).
  config.model.dropout = 0.2
  # Convolution implementation: 'auto' picks the fastest for the backend.
  config.model.conv_impl = "auto"
  # Dtype the model computes in: 'float32', 'bfloat16' (convolutions, LSTM matmuls and the
  # classifier; parameters, optimiser state, BatchNorm statistics and the loss stay
  # float32), or 'auto': bfloat16 on GPU and TPU, float32 on CPU. Checkpoints do not
  # depend on it.
  config.model.compute_dtype = "auto"
  # Characters predicted: 'default' (a-z A-Z 0-9), a literal string, or file:PATH.
  config.model.charset = "default"
  # Lower-case labels before encoding (for lower-case charsets).
  config.model.case_fold = False

  config.data = ml_collections.ConfigDict()
  # Training data: one spec (synth:N|inf[,seed=S][,difficulty=D], tsv:PATH, tfds:NAME,
  # mjsynth:PATH, lmdb:PATH) or a mixture 'SPEC @ W | SPEC @ W' (docs/data.md). synth:
  # words are rendered in the worker processes as batches need them.
  config.data.train = "synth:135000,seed=0"
  # Validation data: one spec or several separated by '|', each evaluated and reported on
  # its own, in full (the last batch is padded, not dropped).
  config.data.eval = "synth:15000,seed=1"
  # Width buckets (multiples of 4); images keep their aspect ratio up to the widest.
  config.data.width_buckets = (128, 256)
  # 'pad' keeps aspect ratio and pads to a bucket; 'stretch' resizes to height x widest bucket.
  config.data.resize_mode = "pad"
  # Labels with characters outside the charset: 'skip' (counted, reported), 'drop' (train on
  # the label without them: "Joe's" -> "Joes") or 'error'.
  config.data.unknown_chars = "skip"
  # Worker processes preparing training batches (reading, rendering, augmenting) ahead of
  # the step; 0 prepares them in the training process, as do sets held in memory without
  # augmentation (nothing to do but assemble batches).
  config.data.num_workers = 2
  # Batches placed on the devices ahead of the step by a background thread, so the
  # host-to-device copy overlaps the step (the progress line's data_wait shows any time
  # the step still waits); 0 places each batch when the step needs it.
  config.data.device_prefetch = 2
  # Augmentation strength in [0, 1] for every training example, real or rendered
  # (crnn_jax/data/augment.py); 0 (the seed's behaviour) turns it off.
  config.data.augment = 0.0

  config.optim = ml_collections.ConfigDict()
  # adam (seed), adamw or rmsprop.
  config.optim.name = "adam"
  # Peak learning rate.
  config.optim.learning_rate = 1e-3
  # Linear warmup steps from 0 to the peak.
  config.optim.warmup_steps = 0
  # 'constant' (seed) or 'cosine' decay to end_lr_fraction * peak at train.num_steps.
  config.optim.schedule = "constant"
  # Final learning rate as a fraction of the peak, for the cosine schedule.
  config.optim.end_lr_fraction = 0.01
  # Decoupled weight decay (adamw only).
  config.optim.weight_decay = 1e-4
  # Clip gradients to this global norm; 0 turns clipping off.
  config.optim.grad_clip_norm = 0.0

  config.train = ml_collections.ConfigDict()
  # Optimisation steps in total (a resumed run continues to this step).
  config.train.num_steps = 20_000
  # Global batch size, split over all devices of all processes.
  config.train.batch_size = 256
  # Seed for initialisation, dropout and data order.
  config.train.seed = 0
  # Print progress (step, loss, images/s, ETA) every this many steps.
  config.train.log_every_steps = 50
  # Steps with a non-finite loss or gradient norm are skipped (no update) and counted;
  # this many in a row stop training with an error (the run has diverged).
  config.train.max_nonfinite_steps = 10

  config.eval = ml_collections.ConfigDict()
  # Evaluate on data.eval every this many steps (and at the end).
  config.eval.every_steps = 1000
  # Global evaluation batch size.
  config.eval.batch_size = 256
  # The evaluation set whose word accuracy picks the best checkpoint (its name as printed
  # in the eval lines), or 'mean' for the mean over all sets.
  config.eval.best_set = "mean"
  # Sample predictions printed and drawn into the TensorBoard image.
  config.eval.num_samples = 16

  config.checkpoint = ml_collections.ConfigDict()
  # Save a checkpoint every this many steps (and at the end, and on SIGTERM/Ctrl-C).
  config.checkpoint.every_steps = 1000
  # Latest checkpoints kept for resuming (the best one is kept apart).
  config.checkpoint.max_to_keep = 3

  # Start from trained weights to fine-tune: 'pretrained' (the model shipped with the
  # package), a weights file, or a workdir or checkpoint path; the output layer is
  # re-initialised if the charset differs.
  config.init_from = config_dict.FieldReference("", field_type=str)
  return config
