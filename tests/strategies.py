"""Hypothesis strategies shared by the tests: tiny dimensions, bounded finite float arrays, attention cases and
tiny model configs. (Helpers that are not strategies live in tests/helpers.py.)

Arrays are drawn on the host (NumPy) and moved to the active backend with ``backend.asarray`` by the tests.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npformer.models import EncoderConfig, EncoderDecoderConfig, GPTConfig

from .helpers import PAD

# One tolerance table per dtype: (rtol, atol) for comparing two computations of the same value.
TOL = {
    np.dtype(np.float64): (1e-9, 1e-11),
    np.dtype(np.float32): (2e-4, 2e-5),
}

# Finite-difference gradient checks (float64, eps=1e-6): normwise relative error must be below GRAD_RTOL.
GRAD_RTOL = 1e-6
GRAD_ATOL = 1e-8


def dims(min_value=1, max_value=5):
    """A small axis length (size 1 included: broadcasting bugs hide there)."""
    return st.integers(min_value, max_value)


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def floats_array(shape, dtype=np.float64, bound=3.0, min_magnitude=0.0):
    """Finite floats in [-bound, bound], of the dtype's width (no subnormals)."""
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                         width=np.dtype(dtype).itemsize * 8)
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


def seeds():
    return st.integers(0, 2**31 - 1)


def normal_array(seed, shape, dtype=np.float64, scale=1.0):
    """A seeded standard-normal array: for values where hypothesis' shrinking adds nothing but the shape matters."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def kernel_fields():
    """A model config's ``kernels`` field: follow the process-wide tier (None), or pin either tier."""
    return st.sampled_from([None, "reference", "fast"])


@st.composite
def gpt_configs(draw, max_group=2, max_vocab=7, max_block=4, attn_impls=("plain",)):
    """Tiny GPTConfigs across the whole option space: MHA and GQA/MQA (query heads per key/value head up to
    ``max_group``), every FFN kind, norm and placement, every position kind, bias, dropout, tied embeddings,
    either kernel tier."""
    n_kv_head = draw(st.integers(1, 2))
    n_head = n_kv_head * draw(st.integers(1, max_group))
    head_dim = draw(st.sampled_from([2, 4]))
    return GPTConfig(
        vocab_size=draw(st.integers(2, max_vocab)), block_size=draw(st.integers(1, max_block)),
        n_layer=draw(st.integers(1, 2)), n_head=n_head, n_kv_head=n_kv_head, n_embd=n_head * head_dim,
        ffn_hidden=draw(st.integers(1, 6)), ffn_kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])), norm_placement=draw(st.sampled_from(["pre", "post"])),
        positions=draw(st.sampled_from(["learned", "sinusoidal", "rope"])), bias=draw(st.booleans()),
        dropout=draw(st.sampled_from([0.0, 0.3])), tie_embeddings=draw(st.booleans()),
        attn_impl=draw(st.sampled_from(list(attn_impls))), kernels=draw(kernel_fields()),
        seed=draw(st.integers(0, 100)),
    )


@st.composite
def encoder_configs(draw, n_classes=None):
    """Tiny EncoderConfigs (no dropout) with both heads: every FFN kind, norm, placement, learned or sinusoidal
    positions, both poolings, both attention paths, either kernel tier; pad id ``PAD``."""
    n_head = draw(st.integers(1, 2))
    return EncoderConfig(
        vocab_size=draw(st.integers(3, 7)), max_len=8, n_layer=draw(st.integers(1, 2)), n_head=n_head,
        n_embd=n_head * draw(st.sampled_from([2, 4])), ffn_hidden=draw(st.integers(1, 5)),
        ffn_kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])), norm_placement=draw(st.sampled_from(["pre", "post"])),
        positions=draw(st.sampled_from(["learned", "sinusoidal"])), scale_embeddings=draw(st.booleans()),
        bias=draw(st.booleans()), dropout=0.0, pad_id=PAD, mlm_head=True,
        n_classes=draw(st.integers(1, 3)) if n_classes is None else n_classes,
        pooling=draw(st.sampled_from(["first", "mean"])), attn_impl=draw(st.sampled_from(["plain", "flash"])),
        kernels=draw(kernel_fields()), seed=draw(st.integers(0, 100)),
    )


@st.composite
def seq2seq_configs(draw):
    """Tiny EncoderDecoderConfigs (no dropout): shared or separate vocabularies, tied output or not, label
    smoothing, every FFN kind, norm, placement, both attention paths, either kernel tier; pad id ``PAD``."""
    n_head = draw(st.integers(1, 2))
    share = draw(st.booleans())
    src_vocab = draw(st.integers(3, 6))
    return EncoderDecoderConfig(
        src_vocab_size=src_vocab, tgt_vocab_size=src_vocab if share else draw(st.integers(3, 6)), max_len=8,
        n_encoder_layer=draw(st.integers(1, 2)), n_decoder_layer=draw(st.integers(1, 2)), n_head=n_head,
        n_embd=n_head * draw(st.sampled_from([2, 4])), ffn_hidden=draw(st.integers(1, 5)),
        ffn_kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])),
        norm=draw(st.sampled_from(["layernorm", "rmsnorm"])), norm_placement=draw(st.sampled_from(["pre", "post"])),
        positions=draw(st.sampled_from(["learned", "sinusoidal"])), scale_embeddings=draw(st.booleans()),
        bias=draw(st.booleans()), dropout=0.0, label_smoothing=draw(st.sampled_from([0.0, 0.1])),
        share_embeddings=share, tie_output=draw(st.booleans()), pad_id=PAD,
        attn_impl=draw(st.sampled_from(["plain", "flash"])), kernels=draw(kernel_fields()),
        seed=draw(st.integers(0, 100)),
    )


@st.composite
def attention_cases(draw, max_t=6, max_d=5, causal=None, mask=True, equal_t=False):
    """A dict of host arrays and options: q (B,H,Tq,D), k, v (B,Hkv,Tk,D), mask, causal, scale.

    Tq <= Tk when causal (the usual decoding layout); any Tq otherwise. Masks: None, a random boolean pattern of
    a broadcastable shape (fully masked rows included when hypothesis draws them), or key padding (B,1,1,Tk).
    q, k and v come from three seeds: no two of them share values.
    """
    B = draw(st.integers(1, 2))
    Hkv = draw(st.integers(1, 3))
    H = Hkv * draw(st.integers(1, 3))
    Tk = draw(st.integers(1, max_t))
    causal = draw(st.booleans()) if causal is None else causal
    Tq = Tk if equal_t else draw(st.integers(1, Tk if causal else max_t))
    D = draw(st.integers(1, max_d))
    seed = draw(seeds())
    kind = draw(st.sampled_from(["none", "pattern", "padding"])) if mask else "none"
    m = None
    if kind == "pattern":
        full = (B, H, Tq, Tk)
        keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
        shape = tuple(n if kept else 1 for n, kept in zip(full, keep))
        shape = shape[draw(st.integers(0, 2)):]  # fewer leading axes broadcast too
        m = draw(hnp.arrays(np.bool_, shape))
    elif kind == "padding":
        lengths = draw(st.lists(st.integers(0, Tk), min_size=B, max_size=B))
        m = (np.arange(Tk)[None, :] < np.array(lengths)[:, None]).reshape(B, 1, 1, Tk)
    scale = draw(st.one_of(st.none(), st.floats(0.1, 2.0)))
    return dict(q=normal_array(seed, (B, H, Tq, D)), k=normal_array(seed + 1, (B, Hkv, Tk, D)),
                v=normal_array(seed + 2, (B, Hkv, Tk, D)), mask=m, causal=causal, scale=scale)


@st.composite
def window_cases(draw, max_t=10, max_d=4):
    """Host float64 q (B,H,Tq,D), k, v (B,Hkv,Tk,D), a mask or None, a scale, and a window W; Tq > Tk allowed."""
    B, Hkv = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H = Hkv * draw(st.integers(1, 3))
    Tq, Tk, D = draw(st.integers(1, max_t)), draw(st.integers(1, max_t)), draw(st.integers(1, max_d))
    seed = draw(seeds())
    mask = None
    if draw(st.booleans()):
        shape = tuple(n if draw(st.booleans()) else 1 for n in (B, H, Tq, Tk))
        mask = draw(hnp.arrays(np.bool_, shape))
    return dict(q=normal_array(seed, (B, H, Tq, D)), k=normal_array(seed + 1, (B, Hkv, Tk, D)),
                v=normal_array(seed + 2, (B, Hkv, Tk, D)), mask=mask, scale=draw(st.one_of(st.none(),
                st.floats(0.1, 2.0))), window=draw(st.integers(1, 6)))
