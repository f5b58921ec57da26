"""jaxlogits: exact, sort-free, jit-compiled logits transforms, sampling and log-probabilities.

Every transform is a pure function ``f(logits, ...)`` on ``[..., V]`` logits whose numeric
parameters are traced (a scalar or one value per row), so changing a value never recompiles.
The contract for what each one means is ``semantics.md``; the docstrings repeat the rule.
"""

from jaxlogits.bias import allow_tokens
from jaxlogits.bias import ban_tokens
from jaxlogits.bias import logit_bias
from jaxlogits.bias import token_bias
from jaxlogits.bias import token_mask
from jaxlogits.decode import beam_search
from jaxlogits.decode import generate
from jaxlogits.decode import model_callback
from jaxlogits.decode import score
from jaxlogits.decode import stream
from jaxlogits.guidance import guidance
from jaxlogits.logprobs import entropy
from jaxlogits.logprobs import log_softmax
from jaxlogits.logprobs import token_logprobs
from jaxlogits.logprobs import top_logprobs
from jaxlogits.penalties import frequency_penalty
from jaxlogits.penalties import no_repeat_ngram
from jaxlogits.penalties import presence_penalty
from jaxlogits.penalties import repetition_penalty
from jaxlogits.penalties import token_counts
from jaxlogits import processors
from jaxlogits import sharding
from jaxlogits.pipeline import SamplingParams
from jaxlogits.pipeline import process_logits
from jaxlogits.pipeline import sample_step
from jaxlogits.processors import History
from jaxlogits.processors import LogitsProcessor
from jaxlogits.processors import chain
from jaxlogits.processors import sample_with
from jaxlogits.sampling import greedy
from jaxlogits.sampling import sample
from jaxlogits.sharding import pad_vocab
from jaxlogits.sharding import padded_vocab_size
from jaxlogits.sharding import vocab_sharded_min_p
from jaxlogits.sharding import vocab_sharded_penalties
from jaxlogits.sharding import vocab_sharded_sample
from jaxlogits.sharding import vocab_sharded_sample_step
from jaxlogits.sharding import vocab_sharded_sampler
from jaxlogits.sharding import vocab_sharded_temperature
from jaxlogits.sharding import vocab_sharded_top_k
from jaxlogits.sharding import vocab_sharded_top_p
from jaxlogits.temperature import temperature
from jaxlogits.truncation import epsilon_cutoff
from jaxlogits.truncation import eta_cutoff
from jaxlogits.truncation import min_p
from jaxlogits.truncation import top_k
from jaxlogits.truncation import top_n_sigma
from jaxlogits.truncation import top_p
from jaxlogits.truncation import typical_p

__version__ = "0.1.0"

# The language model and its tools load Flax on first use only, so `import jaxlogits` stays light
# for code that only samples (PEP 562 lazy attributes).
_LAZY = {
    "ByteTokenizer": "jaxlogits.tokenizer",
    "KVCache": "jaxlogits.model",
    "ModelConfig": "jaxlogits.model",
    "Transformer": "jaxlogits.model",
    "create_model": "jaxlogits.model",
    "default_checkpoint_dir": "jaxlogits.checkpoint",
    "init_cache": "jaxlogits.model",
    "load_checkpoint": "jaxlogits.checkpoint",
    "make_decode_fns": "jaxlogits.model",
    "save_checkpoint": "jaxlogits.checkpoint",
}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'jaxlogits' has no attribute {name!r}")


__all__ = (
    "ByteTokenizer",
    "History",
    "KVCache",
    "LogitsProcessor",
    "ModelConfig",
    "SamplingParams",
    "Transformer",
    "allow_tokens",
    "ban_tokens",
    "beam_search",
    "chain",
    "create_model",
    "default_checkpoint_dir",
    "entropy",
    "epsilon_cutoff",
    "eta_cutoff",
    "frequency_penalty",
    "generate",
    "greedy",
    "guidance",
    "init_cache",
    "load_checkpoint",
    "log_softmax",
    "logit_bias",
    "make_decode_fns",
    "min_p",
    "model_callback",
    "no_repeat_ngram",
    "pad_vocab",
    "padded_vocab_size",
    "presence_penalty",
    "process_logits",
    "processors",
    "repetition_penalty",
    "sample",
    "sample_step",
    "sample_with",
    "save_checkpoint",
    "score",
    "sharding",
    "stream",
    "temperature",
    "token_bias",
    "token_counts",
    "token_logprobs",
    "token_mask",
    "top_k",
    "top_logprobs",
    "top_n_sigma",
    "top_p",
    "typical_p",
    "vocab_sharded_min_p",
    "vocab_sharded_penalties",
    "vocab_sharded_sample",
    "vocab_sharded_sample_step",
    "vocab_sharded_sampler",
    "vocab_sharded_temperature",
    "vocab_sharded_top_k",
    "vocab_sharded_top_p",
)
