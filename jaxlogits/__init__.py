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
from jaxlogits.pipeline import SamplingParams
from jaxlogits.pipeline import process_logits
from jaxlogits.pipeline import sample_step
from jaxlogits.processors import History
from jaxlogits.processors import LogitsProcessor
from jaxlogits.processors import chain
from jaxlogits.processors import sample_with
from jaxlogits.sampling import greedy
from jaxlogits.sampling import sample
from jaxlogits.temperature import temperature
from jaxlogits.truncation import epsilon_cutoff
from jaxlogits.truncation import eta_cutoff
from jaxlogits.truncation import min_p
from jaxlogits.truncation import top_k
from jaxlogits.truncation import top_n_sigma
from jaxlogits.truncation import top_p
from jaxlogits.truncation import typical_p

__version__ = "0.1.0"

__all__ = (
    "History",
    "LogitsProcessor",
    "SamplingParams",
    "allow_tokens",
    "ban_tokens",
    "chain",
    "entropy",
    "epsilon_cutoff",
    "eta_cutoff",
    "frequency_penalty",
    "greedy",
    "guidance",
    "log_softmax",
    "logit_bias",
    "min_p",
    "no_repeat_ngram",
    "presence_penalty",
    "process_logits",
    "processors",
    "repetition_penalty",
    "sample",
    "sample_step",
    "sample_with",
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
)
