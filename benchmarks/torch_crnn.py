"""The seed CRNN in PyTorch: the peer that ``train_speed.py`` measures crnn_jax against.

Same layers as ``crnn_jax.models.CRNN`` with its defaults: seven 3x3/2x2 convolutions
(64, 128, 256, 256, 512, 512, 512 channels) with the same pools, BatchNorm after convs 5
and 6 (epsilon 1e-3; flax's momentum 0.99 is PyTorch's momentum 0.01), two bidirectional
LSTM(128) layers each with input dropout 0.2 (one mask for all time steps, as Keras and
the flax model do), a Linear(63) classifier and CTC loss (mean over examples of each
example's negative log-likelihood; blank 0), trained with Adam.

One difference, on purpose: the flax model zeroes columns beyond each example's width after
every layer (a multiply) and masks them out of BatchNorm statistics; this peer assumes every
image fills its width (all benchmark images do), so it skips the masks. That only makes the
peer cheaper.

``make_train_step`` and ``make_infer`` take an optional autocast dtype (bfloat16 on a GPU:
convolutions, LSTMs and the classifier in bfloat16, the loss in float32, parameters and
Adam's state in float32, as crnn_jax's ``model.compute_dtype='bfloat16'``), and a model
wrapped by ``torch.compile`` or moved to ``channels_last`` works with both.

Needs the ``[bench]`` extra (torch). Not imported by the library or the tests.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

# Channel widths of the seven convolutions, as crnn_jax.models.SEED_CONV_FEATURES.
CONV_FEATURES = (64, 128, 256, 256, 512, 512, 512)


class BiLSTM(nn.Module):
  """Input dropout (one mask per sequence, shared over time), then a bidirectional LSTM."""

  def __init__(self, in_features: int, hidden: int, dropout: float):
    super().__init__()
    self.dropout = dropout
    self.lstm = nn.LSTM(in_features, hidden, batch_first=True, bidirectional=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """x: (B, T, F) -> (B, T, 2 * hidden)."""
    if self.training and self.dropout > 0:
      keep = 1.0 - self.dropout
      mask = torch.bernoulli(
          torch.full((x.shape[0], 1, x.shape[2]), keep, dtype=x.dtype, device=x.device)
      )
      x = x * mask / keep
    return self.lstm(x)[0]


class TorchCRNN(nn.Module):
  """The seed CRNN. Input (B, 1, 32, W) float images; output (B, W/4 - 1, classes) logits."""

  def __init__(self, num_classes: int = 63, hidden: int = 128, dropout: float = 0.2):
    super().__init__()
    f = CONV_FEATURES

    def conv(cin, cout, kernel=3, padding=1):
      return nn.Conv2d(cin, cout, kernel, padding=padding)

    def bn(c):
      return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    self.cnn = nn.Sequential(
        conv(1, f[0]),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        conv(f[0], f[1]),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        conv(f[1], f[2]),
        nn.ReLU(),
        conv(f[2], f[3]),
        nn.ReLU(),
        nn.MaxPool2d((2, 1), (2, 1)),
        conv(f[3], f[4]),
        bn(f[4]),
        nn.ReLU(),
        conv(f[4], f[5]),
        bn(f[5]),
        nn.ReLU(),
        nn.MaxPool2d((2, 1), (2, 1)),
        conv(f[5], f[6], kernel=2, padding=0),
        nn.ReLU(),
    )
    self.rnn = nn.Sequential(BiLSTM(f[6], hidden, dropout), BiLSTM(2 * hidden, hidden, dropout))
    self.classifier = nn.Linear(2 * hidden, num_classes)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = self.cnn(images)  # (B, 512, 1, T)
    x = x.squeeze(2).permute(0, 2, 1)  # [B, F, T] -> [B, T, F]
    return self.classifier(self.rnn(x))


def ctc_loss(logits: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor):
  """Mean over examples of the CTC negative log-likelihood, as crnn_jax.losses.ctc_loss."""
  log_probs = logits.float().log_softmax(-1).permute(1, 0, 2)  # [B, T, K] -> [T, B, K]
  frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
  per_example = nn.functional.ctc_loss(
      log_probs, labels, frames, label_lengths, blank=0, reduction="none", zero_infinity=True
  )
  return per_example.mean()


def _autocast(device_type: str, dtype: torch.dtype | None):
  # No autocast context at all for float32: the default path stays as it was.
  return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def make_train_step(
    model: nn.Module,
    learning_rate: float = 1e-3,
    *,
    autocast: torch.dtype | None = None,
    device_type: str = "cpu",
    fused: bool = False,
):
  """Returns ``step(images, labels, label_lengths) -> loss``: one Adam step in place.

  Args:
    model: a ``TorchCRNN``, possibly wrapped by ``torch.compile``.
    autocast: e.g. ``torch.bfloat16``: the forward pass under ``torch.autocast`` (the
      loss takes float32 log-probabilities either way); None for float32.
    device_type: 'cpu' or 'cuda', for autocast.
    fused: Adam's fused implementation (``torch.optim.Adam(fused=True)``, which PyTorch
      offers on CPU and CUDA) instead of its default for-each one.
  """
  opt = torch.optim.Adam(model.parameters(), lr=learning_rate, fused=fused or None)

  def step(images, labels, label_lengths):
    model.train()
    opt.zero_grad(set_to_none=True)
    with _autocast(device_type, autocast):
      logits = model(images)
    loss = ctc_loss(logits, labels, label_lengths)
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def make_infer(model: nn.Module, *, autocast: torch.dtype | None = None, device_type: str = "cpu"):
  """Returns ``infer(images) -> logits`` in eval mode without autograd (see
  ``make_train_step`` for the arguments)."""

  def infer(images):
    model.eval()
    with torch.inference_mode(), _autocast(device_type, autocast):
      return model(images)

  return infer


def count_params(model: nn.Module) -> int:
  """Trainable parameters: 6,619,711 for the seed CRNN, 2,048 more than crnn_jax's
  6,617,663 because ``nn.LSTM`` keeps two bias vectors per gate (``bias_ih`` and
  ``bias_hh``) where flax's LSTM cell has one."""
  return sum(p.numel() for p in model.parameters())
