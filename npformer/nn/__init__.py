"""Layers: modules that hold Parameters and compose the functional pairs, each with an explicit backward.

Every layer has ``forward(...)`` (which caches what its backward needs), ``backward(dy)`` (which returns the
input gradient and adds parameter gradients into ``.grad``), and from ``Module``: ``named_parameters()``,
``zero_grad()``, ``state_dict()`` / ``load_state_dict()``, ``train()`` / ``eval()``.
"""

from .attention import MultiHeadAttention, padding_mask
from .block import TransformerBlock
from .dropout import Dropout
from .feedforward import FeedForward
from .linear import Embedding, Linear
from .module import Module, Parameter
from .moe import MoEFeedForward
from .norms import LayerNorm, RMSNorm, make_norm
from .positions import SinusoidalTable

__all__ = ["Dropout", "Embedding", "FeedForward", "LayerNorm", "Linear", "MoEFeedForward", "Module",
           "MultiHeadAttention", "Parameter", "RMSNorm", "SinusoidalTable", "TransformerBlock", "make_norm",
           "padding_mask"]
