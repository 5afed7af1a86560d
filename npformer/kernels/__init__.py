"""The fast tier: the reference ops (npformer.functional) computed faster, with the same signatures.

    norms.py        LayerNorm, RMSNorm in place over cache-sized blocks of rows, on threads
    activations.py  tanh GELU in place, block by block
    attention.py    attention in causal row blocks, grouped-query heads without copies
    fused_loss.py   LM head + cross-entropy in chunks (the (N, V) logits never whole)
    adamw.py        the AdamW step in place, block by block
    cpu/            the machinery: the blockwise thread pool, host memory reuse, BLAS thread control
    dispatch.py     the switch: ``ops.NAME`` is the active tier's NAME

Every fast op is tested equal to its reference (tests/kernels). GPU kernels (CuPy fusions) will live here too.
"""

from .dispatch import FAST_OPS, KERNEL_TIERS, get_kernels, implementation, ops, set_kernels, use_kernels

__all__ = ["FAST_OPS", "KERNEL_TIERS", "get_kernels", "implementation", "ops", "set_kernels", "use_kernels"]
