"""CTC decoding in pure JAX: greedy, prefix beam search, lexicon modes and n-gram fusion.

This module owns turning CTC outputs into label sequences. It follows the conventions of
`optax.ctc_loss`: `logits` is a `(B, T, K)` float array of unnormalised scores (any float
dtype; everything is computed in float32 after a `log_softmax`), `logit_paddings` is
`(B, T)` with 1.0 marking a padded frame, and `blank_id` names the blank class. A padded
frame is skipped: nothing in it can change a result. The decoders are vectorised ops and
`lax.scan` over time with static shapes, so they run under `jit` and `vmap`, on sharded
batches and on any backend. The host-side builders (`build_trie`, `build_char_ngram`)
turn word lists into device arrays, and `to_strings` turns results back into text. It
imports only jax, numpy and `crnn_jax.host` (standard library only), so other projects
can use it without the rest of crnn_jax.

One module per job, the public names re-exported here (import them from
`crnn_jax.decode`): `greedy` (best path), `beam` (prefix beam search, with n-gram fusion
and lexicon tries), `lexicon` (exact sequence scores, the closed-lexicon decoder, tries),
`ngram` (character n-gram models), `strings` (ids back to text), `topk` (the CPU top-k the
beam search uses) and `_base` (result types and input checks).

References: Graves et al., "Connectionist Temporal Classification", ICML 2006; Graves,
"Supervised Sequence Labelling with RNNs", 2012, ch. 7 (prefix search); Hannun et al.,
"First-Pass Large Vocabulary Continuous Speech Recognition using Bi-Directional Recurrent
DNNs", 2014 (prefix beam search, LM fusion); Shi et al., "An End-to-End Trainable Neural
Network for Image-based Sequence Recognition", 2015 (lexicon-based transcription).

"""

from crnn_jax.decode._base import CharNgramLM, DecodeResult, LexiconResult, Trie
from crnn_jax.decode.beam import lexicon_beam_search, prefix_beam_search
from crnn_jax.decode.greedy import greedy_decode
from crnn_jax.decode.lexicon import build_trie, lexicon_decode, sequence_log_probs
from crnn_jax.decode.ngram import build_char_ngram
from crnn_jax.decode.strings import to_strings

__all__ = [
    "CharNgramLM",
    "DecodeResult",
    "LexiconResult",
    "Trie",
    "build_char_ngram",
    "build_trie",
    "greedy_decode",
    "lexicon_beam_search",
    "lexicon_decode",
    "prefix_beam_search",
    "sequence_log_probs",
    "to_strings",
]
