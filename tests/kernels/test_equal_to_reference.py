"""The fast tier equals the reference: every fast op's forward outputs and every gradient of its backward, for
drawn shapes and values, in float64 (to 1e-12) and float32 (to the stated tolerance).

The reference (npformer.functional) is what the finite-difference tests prove; these properties carry that proof
over to the fast tier. The ``blocking`` fixture shrinks the blocks and the threshold for threads, so the drawn
(tiny) arrays really are cut into many blocks and spread over several threads: each test counts the blocks and
threads the kernels actually ran on, and fails if the multi-block or multi-thread path did not run.
"""

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.kernels import FAST_OPS, activations, adamw, cpu, implementation, norms

from ..strategies import normal_array, seeds, shapes
from .equality import assert_equal

DTYPES = [np.float64, np.float32]


class BlockCounter:
    """Wraps ``blockwise`` in the fast modules: records how many blocks the kernels ran on and on which threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        """Each hypothesis example starts counting afresh (the fixture lives as long as the whole test)."""
        self.blocks = 0
        self.threads = set()

    def wrap(self, real):
        def counting_blockwise(kernel, *arrays, **kwargs):
            def counted(*views):
                with self.lock:
                    self.blocks += 1
                    self.threads.add(threading.get_ident())
                kernel(*views)

            real(counted, *arrays, **kwargs)

        return counting_blockwise


BLOCKINGS = [("numpy", None), ("numpy", (8, 1)), ("numpy", (8, 3))]
BLOCKING_IDS = ["default-blocks", "tiny-blocks-1-thread", "tiny-blocks-3-threads"]
if "cupy" in backend.available_backends():  # on a device the kernels run once over the whole arrays
    BLOCKINGS.append(("cupy", None))
    BLOCKING_IDS.append("cupy")


@pytest.fixture(params=BLOCKINGS, ids=BLOCKING_IDS)
def blocking(request, monkeypatch):
    """On NumPy: default blocking, or 8-element blocks on 1 or 3 threads (every job of more than 8 elements then
    splits, and with 3 threads every job is shared out); and on CuPy where it is available (the real one, or the
    stand-in). Yields (counter, threads), threads None for default blocks and on CuPy."""
    name, tiny = request.param
    counter = BlockCounter()
    for module in (norms, activations, adamw):
        monkeypatch.setattr(module, "blockwise", counter.wrap(cpu.blockwise))
    threads = None
    if tiny is not None:
        block, threads = tiny
        monkeypatch.setattr(cpu.threads, "BLOCK_ELEMENTS", block)
        monkeypatch.setattr(cpu.threads, "PARALLEL_MIN_ELEMENTS", 1)
        monkeypatch.setattr(adamw, "ADAMW_PARALLEL_MIN", 1)
        monkeypatch.setenv("NPFORMER_NUM_THREADS", str(threads))
    with backend.use_backend(name):
        yield counter, threads


def assert_split(blocking, rows: int, row_size: int):
    """With tiny blocks, a job whose rows span more than one 8-element block must have run as several blocks.
    (That the threads really share the blocks is checked once, on a large job: test_tiny_blocks_...threads.)"""
    counter, threads = blocking
    if threads is None or rows <= max(1, 8 // row_size):  # default blocks, or the rows fit in one 8-element block
        return
    assert counter.blocks > 1, f"{rows} rows of {row_size} ran as {counter.blocks} block(s)"


def both_tiers(op):
    return implementation(op, "fast"), implementation(op, "reference")


def test_every_fast_op_is_tested_here():
    """A fast op added to the dispatch without an equality property here would be unproven."""
    tested = {"layernorm", "rmsnorm", "gelu", "adamw_update",  # here
              "attention", "lm_head_cross_entropy"}  # test_attention_rows.py, test_fused_loss.py
    for op in FAST_OPS:
        assert op.removesuffix("_forward").removesuffix("_backward") in tested, op
        assert implementation(op, "fast") is not implementation(op, "reference"), op


# ---------------------------------------------------------------------------------------------------------------
# norms
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes(min_dims=1, max_dims=3, max_side=9), seed=seeds(), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_layernorm(blocking, dtype, shape, seed, scale):
    blocking[0].reset()
    # an offset the mean must remove; in float64 only: centring 3 + 0.1 z loses float32 digits to cancellation
    # (in both tiers, differently), which says nothing about the fast kernel
    offset = 3.0 if dtype == np.float64 else 0.0
    x = backend.asarray(normal_array(seed, shape, dtype, scale=scale) + offset)
    w, b = (backend.asarray(normal_array(seed + i, shape[-1:], dtype)) for i in (1, 2))
    dy = backend.asarray(normal_array(seed + 3, shape, dtype))
    (fwd, ref_fwd), (bwd, ref_bwd) = both_tiers("layernorm_forward"), both_tiers("layernorm_backward")
    y, cache = fwd(x, w, b)
    ref_y, ref_cache = ref_fwd(x, w, b)
    assert_equal("y", y, ref_y, dtype)
    for name, got, want in zip(("dx", "dw", "db"), bwd(dy, cache), ref_bwd(dy, ref_cache)):
        assert_equal(name, got, want, dtype)
    # the caches are the same NamedTuple, so either tier's backward takes either tier's cache
    assert type(cache) is type(ref_cache)
    assert_equal("dx (reference backward, fast cache)", ref_bwd(dy, cache)[0], ref_bwd(dy, ref_cache)[0], dtype)
    assert_split(blocking, int(np.prod(shape[:-1])), shape[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes(min_dims=1, max_dims=3, max_side=9), seed=seeds(), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_rmsnorm(blocking, dtype, shape, seed, scale):
    blocking[0].reset()
    x = backend.asarray(normal_array(seed, shape, dtype, scale=scale))
    w = backend.asarray(normal_array(seed + 1, shape[-1:], dtype))
    dy = backend.asarray(normal_array(seed + 2, shape, dtype))
    (fwd, ref_fwd), (bwd, ref_bwd) = both_tiers("rmsnorm_forward"), both_tiers("rmsnorm_backward")
    y, cache = fwd(x, w)
    ref_y, ref_cache = ref_fwd(x, w)
    assert_equal("y", y, ref_y, dtype)
    for name, got, want in zip(("dx", "dw"), bwd(dy, cache), ref_bwd(dy, ref_cache)):
        assert_equal(name, got, want, dtype)
    assert_split(blocking, int(np.prod(shape[:-1])), shape[-1])


# ---------------------------------------------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["tanh", "none"])
@given(shape=shapes(min_dims=1, max_dims=3, max_side=9), seed=seeds(), transpose=st.booleans())
def test_gelu(blocking, dtype, approximate, shape, seed, transpose):
    blocking[0].reset()
    x = backend.asarray(normal_array(seed, shape, dtype, scale=3.0))
    if transpose:
        x = x.T  # a non-contiguous input
    dy = backend.asarray(normal_array(seed + 1, x.shape, dtype))
    (fwd, ref_fwd), (bwd, ref_bwd) = both_tiers("gelu_forward"), both_tiers("gelu_backward")
    y, cache = fwd(x, approximate)
    ref_y, ref_cache = ref_fwd(x, approximate)
    assert_equal("y", y, ref_y, dtype)
    assert_equal("dx", bwd(dy, cache), ref_bwd(dy, ref_cache), dtype)
    if approximate == "tanh":
        assert_split(blocking, int(np.prod(x.shape)), 1)


# ---------------------------------------------------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes(min_dims=1, max_dims=2, max_side=12), seed=seeds(), step=st.integers(1, 1000),
       lr=st.floats(1e-5, 1e-1), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.999),
       eps=st.sampled_from([1e-8, 1e-6]), weight_decay=st.sampled_from([0.0, 0.1]))
def test_adamw_update(blocking, dtype, shape, seed, step, lr, beta1, beta2, eps, weight_decay):
    blocking[0].reset()
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, step=step)
    p = normal_array(seed, shape, dtype)
    g = normal_array(seed + 1, shape, dtype)
    m = normal_array(seed + 2, shape, dtype, scale=0.1)
    v = np.abs(normal_array(seed + 3, shape, dtype, scale=0.1))  # a second moment is never negative
    fast, ref = both_tiers("adamw_update")
    results = []
    for update in (fast, ref):
        arrays = [backend.asarray(a.copy()) for a in (p, g, m, v)]
        update(*arrays, **hyper)
        results.append(arrays)
    for name, got, want in zip(("p", "g", "m", "v"), *results):
        assert_equal(name, got, want, dtype)
    np.testing.assert_array_equal(backend.to_numpy(results[0][1]), g)  # the gradient is read, never written
    assert_split(blocking, shape[0], int(np.prod(shape[1:])))


def test_tiny_blocks_really_use_several_threads(blocking):
    """The tiny-block settings really spread one large job over several threads (checked once, on a job large
    enough that the helper threads are started and given blocks)."""
    counter, threads = blocking
    if threads is None:
        pytest.skip("only the tiny-block settings split jobs")
    x = backend.asarray(normal_array(0, (4096, 4), np.float64))
    implementation("layernorm_forward", "fast")(x, backend.asarray(np.ones(4)), backend.asarray(np.zeros(4)))
    assert counter.blocks == 4096 // 2  # 8-element blocks of 2 rows of 4
    if threads > 1:
        assert len(counter.threads) > 1, "every block ran on the calling thread"
