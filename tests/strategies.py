"""Hypothesis strategies shared by the tests: tiny dimensions and bounded, finite float arrays.

Arrays are drawn on the host (NumPy) and moved to the active backend with ``backend.asarray`` by the tests.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npformer.models import GPTConfig

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


@st.composite
def gpt_configs(draw, max_group=2, max_vocab=7, max_block=4, attn_impls=("plain",)):
    """Tiny GPTConfigs across the whole option space: MHA and GQA/MQA (query heads per key/value head up to
    ``max_group``), every FFN kind, norm and placement, every position kind, bias, dropout, tied embeddings."""
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
        attn_impl=draw(st.sampled_from(list(attn_impls))), seed=draw(st.integers(0, 100)),
    )
