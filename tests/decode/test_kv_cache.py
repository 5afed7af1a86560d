"""The key/value cache: preallocated buffers, views not copies, named errors, and memory that shrinks with
grouped-query attention. (That decoding with it is exact is in test_generate.py.)"""

import numpy as np
import pytest

from npformer import backend
from npformer.decode.kv_cache import KVCache, kv_cache_nbytes, make_kv_caches
from npformer.models import GPT, GPTConfig


def test_kv_cache_buffers_views_and_errors(xp_backend):
    cache = KVCache(2, 3, 5, 4, dtype="float64")
    assert cache.k.shape == (2, 3, 5, 4) and cache.nbytes == 2 * 2 * 3 * 5 * 4 * 8
    rng = np.random.default_rng(0)
    k1, v1 = (backend.asarray(rng.standard_normal((2, 3, 2, 4))) for _ in range(2))
    k_all, v_all = cache.update(k1, v1)
    assert k_all.shape == (2, 3, 2, 4) and cache.length == 2
    k2, v2 = (backend.asarray(rng.standard_normal((2, 3, 1, 4))) for _ in range(2))
    k_all, v_all = cache.update(k2, v2)
    np.testing.assert_array_equal(backend.to_numpy(k_all),
                                  np.concatenate([backend.to_numpy(k1), backend.to_numpy(k2)], axis=2))
    np.testing.assert_array_equal(backend.to_numpy(v_all)[:, :, 2:], backend.to_numpy(v2))
    cache.k[0, 0, 0, 0] = 123.0  # update returned views of the buffers, not copies
    assert backend.to_float(k_all[0, 0, 0, 0]) == 123.0
    with pytest.raises(ValueError, match="KVCache: 3 new positions after 3 cached ones exceed max_len=5"):
        cache.update(*(backend.asarray(np.zeros((2, 3, 3, 4))) for _ in range(2)))
    with pytest.raises(ValueError, match=r"KVCache: k must be \(B, Hkv, T_new, D\)"):
        cache.update(backend.asarray(np.zeros((2, 2, 1, 4))), backend.asarray(np.zeros((2, 2, 1, 4))))
    with pytest.raises(TypeError, match="KVCache: k has dtype float32"):
        cache.update(backend.asarray(np.zeros((2, 3, 1, 4), np.float32)),
                     backend.asarray(np.zeros((2, 3, 1, 4), np.float32)))
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="KVCache: max_len must be a positive integer"):
        KVCache(1, 1, 0, 4)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_cache_memory_shrinks_by_query_groups(xp_backend, n_kv_head):
    """The cache stores Hkv heads: GQA/MQA caches are H / Hkv times smaller than multi-head attention's."""
    def caches(hkv, dtype):
        cfg = GPTConfig(vocab_size=5, block_size=16, n_layer=3, n_head=4, n_kv_head=hkv, n_embd=16)
        model = GPT(cfg) if dtype == "float32" else GPT(cfg).astype(np.float64)
        return make_kv_caches(model, 2, 16)

    mha, grouped = kv_cache_nbytes(caches(4, "float32")), kv_cache_nbytes(caches(n_kv_head, "float32"))
    assert mha == 3 * 2 * (2 * 4 * 16 * 4) * 4  # L x (k, v) x B Hkv max_len D x bytes
    assert mha / grouped == 4 / n_kv_head
    assert kv_cache_nbytes(caches(n_kv_head, "float64")) == 2 * grouped
    assert caches(n_kv_head, "float64")[0].k.dtype == np.float64
