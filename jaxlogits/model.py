"""A small decoder-only transformer language model in Flax NNX.

Architecture (pre-norm, LLaMA-style):

* token embedding ``[vocab_size, d_model]``; the output projection is **tied**
  to it (``logits = h @ embedding.T``), so there is no separate unembedding
  matrix;
* ``num_layers`` blocks, each ``x + Attn(RMSNorm(x))`` then
  ``x + SwiGLU(RMSNorm(x))``;
* grouped-query attention: ``num_heads`` query heads share ``num_kv_heads``
  key/value heads (``num_heads % num_kv_heads == 0``), rotary position
  embeddings (half-split "rotate_half" form, base ``rope_theta``) applied to
  queries and keys at their absolute positions;
* a final RMSNorm, then the tied output projection. Logits are float32.

Parameters are always float32; ``ModelConfig.dtype`` is the compute dtype of
the matrix multiplications ("float32" or "bfloat16").

KV cache and calling convention
-------------------------------
The cache is an explicit pytree, :class:`KVCache`, created by
:func:`init_cache` and threaded through calls (the module itself holds no
mutable cache state)::

    cache.k[i], cache.v[i]  # layer i, [B, num_kv_heads, max_len, head_dim]
    cache.valid             # [B, max_len] bool, True where that slot was written

Slot ``s`` of row ``b`` holds the key/value of the token at position ``s``.

``model(tokens, positions, cache, valid=valid) -> (logits, new_cache)``

* ``tokens``: ``[B, T]`` int32; ``positions``: ``[B, T]`` int32 absolute
  positions in ``[0, max_len)``; ``valid``: ``[B, T]`` bool (default all
  True). The keys/values of valid tokens are written into the cache at their
  positions and those slots are marked valid; invalid tokens (right padding,
  finished rows) write nothing. A position ``>= max_len`` also writes nothing.
* Each query at position ``p`` of row ``b`` attends to the cache slots
  ``s <= p`` of row ``b`` that are marked valid (after this call's writes).
  A row never attends to a slot it has not written, whatever garbage that
  slot holds.
* Returns ``logits [B, T, vocab_size]`` float32 (rows/tokens that are invalid
  get well-defined but meaningless logits) and the updated cache.

Decoding (the sampler's decode loop uses exactly this)::

    fns = make_decode_fns(model)                    # pure, jit/while_loop-safe
    cache = init_cache(config, batch_size=B, max_len=L)
    # 1. prefill a right-padded prompt batch, tokens [B, T], lengths [B]:
    logits, cache = fns.prefill(tokens, lengths, cache)   # [B, T, V]
    next_logits = gather_last_logits(logits, lengths)     # [B, V] at lengths-1
    # 2. then one token per step; row b's new token goes to position[b]
    #    (= lengths[b] for the first step, then +1 each step):
    step_logits, cache = fns.step(token, position, cache)  # token, position: [B]
    # step_logits: [B, V], the distribution of the token at position + 1.
    # optional `active` [B] bool: rows with active=False write nothing.

``prefill`` uses positions ``0..T-1`` and ``valid = arange(T) < lengths``.
Rows must have ``lengths >= 1``.

Training / scoring without a cache: ``model.forward(tokens)`` (or
``model(tokens)``, which returns ``(logits, None)``) runs plain causal
attention over the ``T`` tokens at positions ``0..T-1``.

Pure functions for ``jax.jit`` / ``lax.while_loop``: :func:`make_apply`
(graphdef captured, state passed explicitly), :func:`make_tokens_to_logits`
and :func:`make_decode_fns` (graphdef and state captured), all built with
``nnx.split`` / ``nnx.merge``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlogits.tokenizer import VOCAB_SIZE

__all__ = [
    "ModelConfig",
    "CONFIGS",
    "get_config",
    "KVCache",
    "init_cache",
    "RMSNorm",
    "Attention",
    "SwiGLU",
    "Block",
    "Transformer",
    "create_model",
    "count_params",
    "apply_rope",
    "gather_last_logits",
    "make_apply",
    "make_tokens_to_logits",
    "DecodeFns",
    "make_decode_fns",
]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of a :class:`Transformer` (immutable, hashable).

    Attributes:
      vocab_size: number of token ids (259 for the byte tokenizer).
      d_model: width of the residual stream.
      num_layers: number of transformer blocks.
      num_heads: query heads per attention layer.
      num_kv_heads: key/value heads (divides ``num_heads``).
      head_dim: width of one head (even, for rotary embeddings).
      mlp_dim: hidden width of the SwiGLU MLP.
      max_seq_len: longest sequence the model is meant for (default cache size).
      rope_theta: rotary embedding base.
      norm_eps: RMSNorm epsilon.
      dtype: compute dtype name: "float32", "bfloat16" or "float16".
    """

    vocab_size: int = VOCAB_SIZE
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    mlp_dim: int = 352
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dtype: str = "float32"

    def __post_init__(self) -> None:
        """Check the sizes; raise ValueError on inconsistent values."""
        for name in ("vocab_size", "d_model", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "mlp_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even, got {self.head_dim}")
        if not self.rope_theta > 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta}")
        if not self.norm_eps > 0:
            raise ValueError(f"ModelConfig.norm_eps must be > 0, got {self.norm_eps}")
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"ModelConfig.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @property
    def compute_dtype(self) -> Any:
        """The jnp dtype named by ``dtype``."""
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict.

        Returns:
          A dict with one entry per field.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build a config from a dict made by :meth:`to_dict`.

        Args:
          d: field name -> value. Unknown keys are an error; missing keys take
            their defaults.

        Returns:
          The config.

        Raises:
          ValueError: unknown keys or invalid values.
        """
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        kwargs = dict(d)
        for f in dataclasses.fields(cls):
            if f.name in kwargs and f.type in ("float",) and isinstance(kwargs[f.name], int):
                kwargs[f.name] = float(kwargs[f.name])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "ModelConfig":
        """Return a copy with some fields changed.

        Args:
          **changes: field name -> new value.

        Returns:
          The new config (validated).
        """
        return dataclasses.replace(self, **changes)


#: Named model sizes. "default" (= ``ModelConfig()``, alias "small", 771,584
#: parameters) is the shipped checkpoint's configuration; "tiny" is for tests;
#: "medium" (~3.0M parameters) is about 2-4x slower per token on a CPU.
CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=128),
    "small": ModelConfig(),
    "default": ModelConfig(),
    "medium": ModelConfig(d_model=256, num_layers=4, num_heads=4, num_kv_heads=2,
                          head_dim=64, mlp_dim=704, max_seq_len=512),
}


def get_config(name: str) -> ModelConfig:
    """Look up a named configuration.

    Args:
      name: a key of :data:`CONFIGS`.

    Returns:
      The config.

    Raises:
      ValueError: unknown name.
    """
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(
            f"unknown model config {name!r}; choose from {', '.join(CONFIGS)}") from None


class KVCache(NamedTuple):
    """Explicit key/value cache (a pytree).

    Attributes:
      k: tuple of ``num_layers`` arrays ``[B, num_kv_heads, max_len, head_dim]`` (heads
        before slots: the attention's matrix products read them in place, with no transposed
        copy per step).
      v: tuple of ``num_layers`` arrays ``[B, num_kv_heads, max_len, head_dim]``.
      valid: ``[B, max_len]`` bool, True for slots that hold a written token.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    valid: jax.Array

    @property
    def max_len(self) -> int:
        """Number of slots (positions) per row."""
        return self.valid.shape[1]


def init_cache(config: ModelConfig, batch_size: int, max_len: int | None = None,
               dtype: Any = jnp.float32) -> KVCache:
    """Create an empty cache.

    Args:
      config: the model config.
      batch_size: rows ``B``.
      max_len: slots per row (default ``config.max_seq_len``).
      dtype: dtype of the k/v arrays.

    Returns:
      A :class:`KVCache` of zeros with ``valid`` all False; k/v arrays are
      ``[batch_size, num_kv_heads, max_len, head_dim]``.

    Examples:
      >>> from jaxlogits.model import get_config, init_cache
      >>> init_cache(get_config("tiny"), batch_size=2, max_len=8).valid.shape
      (2, 8)
    """
    max_len = config.max_seq_len if max_len is None else int(max_len)
    shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    zeros_v = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(k=zeros, v=zeros_v, valid=jnp.zeros((batch_size, max_len), bool))


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Apply rotary position embeddings.

    Args:
      x: ``[B, T, H, D]`` queries or keys (D even).
      positions: ``[B, T]`` int absolute positions.
      theta: the rotary base.

    Returns:
      ``x`` rotated, same shape and dtype. Pairs ``(x[..., i], x[..., i+D/2])``
      are rotated by angle ``position * theta ** (-2i / D)``.
    """
    half = x.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [D/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, D/2]
    sin = jnp.sin(angles)[:, :, None, :]
    xf = x.astype(jnp.float32)
    x1, x2 = xf[..., :half], xf[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class RMSNorm(nnx.Module):
    """Root-mean-square layer norm with a learned scale (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        """Create the norm.

        Args:
          dim: feature size.
          eps: added to the mean square.
        """
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise the last axis.

        Args:
          x: ``[..., dim]``.

        Returns:
          ``x / rms(x) * scale`` in ``x``'s dtype (computed in float32).
        """
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(x.dtype)


def _dense(din: int, dout: int, cfg: ModelConfig, rngs: nnx.Rngs, std: float) -> nnx.Linear:
    """A bias-free linear layer with normal(std) init and the compute dtype."""
    return nnx.Linear(din, dout, use_bias=False, dtype=cfg.compute_dtype,
                      param_dtype=jnp.float32,
                      kernel_init=nnx.initializers.normal(stddev=std), rngs=rngs)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
            heads_first: bool = False) -> jax.Array:
    """Grouped-query softmax attention.

    Args:
      q: ``[B, T, H, D]``.
      k: ``[B, S, KV, D]`` (``[B, KV, S, D]`` with ``heads_first``, the cache's layout).
      v: like ``k``.
      mask: ``[B, T, S]`` bool, True where query t may attend to key s. Masked scores are
        replaced (not added to), so a NaN key behind the mask cannot leak.

    Returns:
      ``[B, T, H, D]`` in q's dtype.
    """
    b, t, h, d = q.shape
    kv = k.shape[1 if heads_first else 2]
    kvs = "bksd" if heads_first else "bskd"
    qg = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum(f"btkgd,{kvs}->bkgts", qg, k,
                        preferred_element_type=jnp.float32) / math.sqrt(d)
    scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"bkgts,{kvs}->btkgd", probs, v)
    return out.reshape(b, t, h, d)


class Attention(nnx.Module):
    """Grouped-query self-attention with rotary embeddings."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        """Create the projections.

        Args:
          cfg: model config.
          rngs: random streams for initialisation.
        """
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.rope_theta = cfg.rope_theta
        std = 0.02
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        self.wq = _dense(cfg.d_model, cfg.num_heads * cfg.head_dim, cfg, rngs, std)
        self.wk = _dense(cfg.d_model, cfg.num_kv_heads * cfg.head_dim, cfg, rngs, std)
        self.wv = _dense(cfg.d_model, cfg.num_kv_heads * cfg.head_dim, cfg, rngs, std)
        self.wo = _dense(cfg.num_heads * cfg.head_dim, cfg.d_model, cfg, rngs, out_std)

    def _qkv(self, x: jax.Array, positions: jax.Array):
        """Project to rotated q ``[B,T,H,D]``, rotated k and v ``[B,T,KV,D]``."""
        b, t, _ = x.shape
        q = self.wq(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.wk(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.wv(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        return (apply_rope(q, positions, self.rope_theta),
                apply_rope(k, positions, self.rope_theta), v)

    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
                 layer_cache: tuple[jax.Array, jax.Array] | None = None,
                 write_index: tuple[jax.Array, jax.Array] | None = None,
                 slot_valid: jax.Array | None = None):
        """Attend.

        Args:
          x: ``[B, T, d_model]`` normalised input.
          positions: ``[B, T]`` int positions (for the rotary embedding).
          mask: ``[B, T, S]`` bool attention mask; ``S = T`` without a cache,
            ``S = max_len`` with one.
          layer_cache: ``(k, v)`` each ``[B, KV, max_len, D]``, or None.
          write_index: ``(row_index [B, T], slot [B, T])`` where to write the
            new k/v (slots ``>= max_len`` are dropped); needed with a cache.
          slot_valid: ``[B, max_len]`` bool, slots valid after the write; the
            values of other slots are zeroed before use so that garbage (even
            NaN) cannot leak through a zero attention weight (their keys need
            nothing: their scores are replaced by the mask).

        Returns:
          ``(out [B, T, d_model], new_layer_cache or None)``.
        """
        b, t, _ = x.shape
        q, k, v = self._qkv(x, positions)
        new_cache = None
        if layer_cache is not None:
            ck, cv = layer_cache
            rows, slots = write_index
            # k, v [B, T, KV, D] go to cache[b, head, slot] for each (b, t, head)
            at = (rows[:, :, None], jnp.arange(self.num_kv_heads)[None, None, :],
                  slots[:, :, None])
            ck = ck.at[at].set(k.astype(ck.dtype), mode="drop")
            cv = cv.at[at].set(v.astype(cv.dtype), mode="drop")
            new_cache = (ck, cv)
            v = jnp.where(slot_valid[:, None, :, None], cv, 0).astype(q.dtype)
            out = _attend(q, ck.astype(q.dtype), v, mask, heads_first=True)
        else:
            out = _attend(q, k, v, mask)
        return self.wo(out.reshape(b, t, self.num_heads * self.head_dim)), new_cache


class SwiGLU(nnx.Module):
    """Gated MLP: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        """Create the three projections.

        Args:
          cfg: model config.
          rngs: random streams for initialisation.
        """
        out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
        self.gate = _dense(cfg.d_model, cfg.mlp_dim, cfg, rngs, 0.02)
        self.up = _dense(cfg.d_model, cfg.mlp_dim, cfg, rngs, 0.02)
        self.down = _dense(cfg.mlp_dim, cfg.d_model, cfg, rngs, out_std)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the MLP.

        Args:
          x: ``[..., d_model]``.

        Returns:
          ``[..., d_model]``.
        """
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
    """Pre-norm transformer block: attention then SwiGLU, both residual."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        """Create the block.

        Args:
          cfg: model config.
          rngs: random streams for initialisation.
        """
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg, rngs=rngs)

    def __call__(self, x, positions, mask, layer_cache=None, write_index=None,
                 slot_valid=None):
        """Run the block.

        Args:
          x: ``[B, T, d_model]`` residual stream (float32).
          positions, mask, layer_cache, write_index, slot_valid: as for
            :meth:`Attention.__call__`.

        Returns:
          ``(x [B, T, d_model], new_layer_cache or None)``.
        """
        h, new_cache = self.attn(self.attn_norm(x).astype(self.attn.wq.dtype), positions,
                                 mask, layer_cache, write_index, slot_valid)
        x = x + h.astype(x.dtype)
        x = x + self.mlp(self.mlp_norm(x).astype(self.attn.wq.dtype)).astype(x.dtype)
        return x, new_cache


class Transformer(nnx.Module):
    """Decoder-only transformer language model (see the module docstring)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        """Create the model with freshly initialised parameters.

        Args:
          config: sizes.
          rngs: random streams for initialisation (``nnx.Rngs(seed)``).
        """
        self.config = config
        self.embed = nnx.Embed(config.vocab_size, config.d_model,
                               embedding_init=nnx.initializers.normal(stddev=0.02),
                               param_dtype=jnp.float32, rngs=rngs)
        self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.d_model, config.norm_eps)

    def _logits(self, x: jax.Array) -> jax.Array:
        """Final norm and tied output projection -> float32 logits."""
        h = self.final_norm(x)
        return jnp.einsum("btd,vd->btv", h, self.embed.embedding[...],
                          preferred_element_type=jnp.float32).astype(jnp.float32)

    def forward(self, tokens: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        """Full causal forward pass without a cache (training, scoring).

        Args:
          tokens: ``[B, T]`` int token ids at positions ``0..T-1``.
          valid: optional ``[B, T]`` bool; invalid tokens are not attended to
            (their own logits are meaningless).

        Returns:
          ``logits [B, T, vocab_size]`` float32; ``logits[:, t]`` predicts the
          token at ``t + 1``.
        """
        tokens = jnp.asarray(tokens, jnp.int32)
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        idx = jnp.arange(t)
        mask = jnp.broadcast_to(idx[None, :, None] >= idx[None, None, :], (b, t, t))
        if valid is not None:
            mask = mask & jnp.asarray(valid, bool)[:, None, :]
        x = self.embed(tokens).astype(jnp.float32)
        for layer in self.layers:
            x, _ = layer(x, positions, mask)
        return self._logits(x)

    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 cache: KVCache | None = None, *, valid: jax.Array | None = None):
        """Run the model, reading and writing an explicit KV cache.

        Args:
          tokens: ``[B, T]`` int32 token ids.
          positions: ``[B, T]`` int32 absolute positions (required with a
            cache; must be ``0..T-1`` without one).
          cache: a :class:`KVCache` or None (then this is :meth:`forward`).
          valid: ``[B, T]`` bool, which tokens are real (default all). With a
            cache only valid tokens are written.

        Returns:
          ``(logits [B, T, vocab_size] float32, new_cache)``; ``new_cache`` is
          None when ``cache`` is None.
        """
        if cache is None:
            return self.forward(tokens, valid=valid), None
        if positions is None:
            raise ValueError("positions are required when a cache is given")
        tokens = jnp.asarray(tokens, jnp.int32)
        positions = jnp.asarray(positions, jnp.int32)
        b, t = tokens.shape
        if valid is None:
            valid = jnp.ones((b, t), bool)
        valid = jnp.asarray(valid, bool)
        max_len = cache.valid.shape[1]
        rows = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32)[:, None], (b, t))
        slots = jnp.where(valid, positions, max_len)  # out of range -> dropped
        slot_valid = cache.valid.at[rows, slots].set(True, mode="drop")  # [B, S]
        slot_pos = jnp.arange(max_len, dtype=jnp.int32)
        mask = slot_valid[:, None, :] & (slot_pos[None, None, :] <= positions[:, :, None])
        x = self.embed(tokens).astype(jnp.float32)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            x, (k_i, v_i) = layer(x, positions, mask, (cache.k[i], cache.v[i]),
                                  (rows, slots), slot_valid)
            new_k.append(k_i)
            new_v.append(v_i)
        return self._logits(x), KVCache(tuple(new_k), tuple(new_v), slot_valid)


def create_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """Create a randomly initialised model.

    Args:
      config: sizes.
      seed: initialisation seed.

    Returns:
      The :class:`Transformer`.

    Examples:
      >>> from jaxlogits.model import create_model, get_config
      >>> model = create_model(get_config("tiny"), seed=0)
      >>> model.forward(jnp.zeros((1, 5), jnp.int32)).shape
      (1, 5, 259)
    """
    return Transformer(config, rngs=nnx.Rngs(seed))


def count_params(model: nnx.Module) -> int:
    """Count parameters.

    Args:
      model: an NNX module.

    Returns:
      The total number of scalar parameters.
    """
    state = nnx.state(model, nnx.Param)
    return int(sum(x.size for x in jax.tree_util.tree_leaves(state)))


def gather_last_logits(logits: jax.Array, lengths: jax.Array) -> jax.Array:
    """Pick each row's logits at its last real token.

    Args:
      logits: ``[B, T, V]``.
      lengths: ``[B]`` int, number of real tokens per row (>= 1).

    Returns:
      ``[B, V]``: ``logits[b, lengths[b] - 1]``.
    """
    idx = jnp.clip(jnp.asarray(lengths, jnp.int32) - 1, 0, logits.shape[1] - 1)
    return jnp.take_along_axis(logits, idx[:, None, None], axis=1)[:, 0]


def make_apply(graphdef: Any) -> Callable:
    """Make a pure apply function with the parameters passed explicitly.

    Args:
      graphdef: the graphdef from ``graphdef, state = nnx.split(model)``.

    Returns:
      ``apply(state, tokens, positions, cache, valid=None) -> (logits, cache)``
      with the semantics of :meth:`Transformer.__call__`; pure, so it can be
      jitted or used inside ``lax.while_loop`` with ``state`` as an argument.
    """

    def apply(state, tokens, positions, cache, valid=None):
        """Run the model rebuilt from ``state``; see :meth:`Transformer.__call__`."""
        model = nnx.merge(graphdef, state)
        return model(tokens, positions, cache, valid=valid)

    return apply


def make_tokens_to_logits(model: Transformer) -> Callable:
    """Make a pure ``tokens_to_logits`` function closing over the model.

    Args:
      model: the model; its graphdef and current state are captured (later
        changes to ``model`` are not seen).

    Returns:
      ``tokens_to_logits(tokens [B,T], positions [B,T], cache, valid=None)
      -> (logits [B,T,V], cache)``, pure and jit/while_loop-safe.
    """
    graphdef, state = nnx.split(model)
    apply = make_apply(graphdef)

    def tokens_to_logits(tokens, positions, cache, valid=None):
        """Return ``(logits [B,T,V], cache)``; see :meth:`Transformer.__call__`."""
        return apply(state, tokens, positions, cache, valid)

    return tokens_to_logits


class DecodeFns(NamedTuple):
    """Pure prefill/step functions for a decode loop (see the module docstring).

    Attributes:
      prefill: ``prefill(tokens [B,T], lengths [B], cache) -> (logits [B,T,V], cache)``.
      step: ``step(token [B], position [B], cache, active=None) -> (logits [B,V], cache)``.
      config: the model config (for :func:`init_cache`).
    """

    prefill: Callable
    step: Callable
    config: ModelConfig


def make_decode_fns(model: Transformer) -> DecodeFns:
    """Build the pure prefill/step pair used by decode loops.

    Args:
      model: the model (graphdef and state captured).

    Returns:
      A :class:`DecodeFns`. ``prefill`` writes tokens ``t < lengths[b]`` of
      each right-padded row at positions ``0..T-1``; ``step`` writes one
      token per row at ``position[b]`` (rows with ``active[b] == False`` or
      ``position[b] >= max_len`` write nothing) and returns the next-token
      logits ``[B, V]``.

    Examples:
      >>> from jaxlogits.model import (create_model, gather_last_logits, get_config,
      ...                              init_cache, make_decode_fns)
      >>> cfg = get_config("tiny")
      >>> fns = make_decode_fns(create_model(cfg))
      >>> tokens, lengths = jnp.array([[256, 104, 105], [256, 120, 0]]), jnp.array([3, 2])
      >>> logits, cache = fns.prefill(tokens, lengths, init_cache(cfg, 2, 16))
      >>> step_logits, cache = fns.step(jnp.array([33, 33]), lengths, cache)
      >>> gather_last_logits(logits, lengths).shape, step_logits.shape
      ((2, 259), (2, 259))
    """
    tokens_to_logits = make_tokens_to_logits(model)

    def prefill(tokens, lengths, cache):
        """Write right-padded prompts ``[B,T]``; return ``(logits [B,T,V], cache)``."""
        tokens = jnp.asarray(tokens, jnp.int32)
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        valid = positions < jnp.asarray(lengths, jnp.int32)[:, None]
        return tokens_to_logits(tokens, positions, cache, valid)

    def step(token, position, cache, active=None):
        """Write ``token [B]`` at ``position [B]``; return ``(logits [B,V], cache)``."""
        token = jnp.asarray(token, jnp.int32)[:, None]
        position = jnp.asarray(position, jnp.int32)[:, None]
        valid = None if active is None else jnp.asarray(active, bool)[:, None]
        logits, cache = tokens_to_logits(token, position, cache, valid)
        return logits[:, 0], cache

    return DecodeFns(prefill=prefill, step=step, config=model.config)
