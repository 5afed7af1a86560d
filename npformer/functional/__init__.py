"""The reference tier: every Transformer operation as a forward/backward pair written as its maths.

``y, cache = NAME_forward(...)`` and ``grads = NAME_backward(dy, cache)``, side by side in a module named for
what they compute, each backward's derivation in its docstring. No threads, no blocks, no reused buffers: this is
the code to read. The fast tier (npformer.kernels) has the same signatures and is tested equal to these; layers
reach either through npformer.kernels.ops.

A suggested reading order: linear.py, norms.py, softmax.py, attention.py, loss.py, activations.py, positions.py,
flash_attention.py (the same attention, tiled), updates.py (an AdamW step), moe.py (a mixture of experts: the
router, its auxiliary losses, the experts gathered per expert), patches.py (a ViT's image to patch tokens).
"""

from .activations import gelu_backward, gelu_forward, relu_backward, relu_forward, swiglu_backward, swiglu_forward
from .attention import attention_backward, attention_forward
from .dropout import dropout_backward, dropout_forward
from .erf import erf
from .flash_attention import flash_attention_backward, flash_attention_forward
from .linear import embedding_backward, embedding_forward, linear_backward, linear_forward
from .loss import (
    cross_entropy_backward,
    cross_entropy_forward,
    lm_head_cross_entropy_backward,
    lm_head_cross_entropy_forward,
)
from .moe import (
    capacity_keep,
    expert_capacity,
    load_balancing_loss_backward,
    load_balancing_loss_forward,
    moe_experts_backward,
    moe_experts_forward,
    moe_route_backward,
    moe_route_forward,
    router_z_loss_backward,
    router_z_loss_forward,
)
from .norms import layernorm_backward, layernorm_forward, rmsnorm_backward, rmsnorm_forward
from .patches import patches_backward, patches_forward
from .positions import rope_backward, rope_forward, sinusoidal_positions
from .softmax import softmax_backward, softmax_forward
from .updates import adamw_update

__all__ = [
    "adamw_update", "attention_backward", "attention_forward", "capacity_keep", "cross_entropy_backward",
    "cross_entropy_forward", "dropout_backward", "dropout_forward", "embedding_backward", "embedding_forward", "erf",
    "expert_capacity", "flash_attention_backward", "flash_attention_forward", "gelu_backward", "gelu_forward",
    "layernorm_backward", "layernorm_forward", "linear_backward", "linear_forward", "lm_head_cross_entropy_backward",
    "lm_head_cross_entropy_forward", "load_balancing_loss_backward", "load_balancing_loss_forward",
    "moe_experts_backward", "moe_experts_forward", "moe_route_backward", "moe_route_forward",
    "patches_backward", "patches_forward", "relu_backward",
    "relu_forward", "rmsnorm_backward", "rmsnorm_forward", "rope_backward", "rope_forward", "router_z_loss_backward",
    "router_z_loss_forward", "sinusoidal_positions", "softmax_backward", "softmax_forward", "swiglu_backward",
    "swiglu_forward",
]
