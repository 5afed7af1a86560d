"""Forward/backward pairs for every Transformer operation: ``y, cache = NAME_forward(...)``,
``grads = NAME_backward(dy, cache)``. Each pair lives in a module named for what it computes."""

# These imports are the package's public face (F.<op>_forward / F.<op>_backward), unused here by design:
# ruff: noqa: F401
from .activations import (
    dropout_backward,
    dropout_forward,
    erf,
    gelu_backward,
    gelu_forward,
    relu_backward,
    relu_forward,
    softmax_backward,
    softmax_forward,
    swiglu_backward,
    swiglu_forward,
)
from .attention import attention_backward, attention_forward
from .flash_attention import flash_attention_backward, flash_attention_forward
from .fused_loss import lm_head_cross_entropy_backward, lm_head_cross_entropy_forward
from .linear import embedding_backward, embedding_forward, linear_backward, linear_forward
from .loss import cross_entropy_backward, cross_entropy_forward
from .norms import layernorm_backward, layernorm_forward, rmsnorm_backward, rmsnorm_forward
from .positions import rope_backward, rope_forward, sinusoidal_positions
