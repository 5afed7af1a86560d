"""Capture what a forward pass computes inside: every layer's attention probabilities and every block's
activations, from GPT, Encoder and EncoderDecoder alike.

Shapes: L layers, B batch, H heads, Tq queries, Tk keys, T time, C channels.

How, without slowing training: ``MultiHeadAttention`` and ``TransformerBlock`` each have a ``capture``
attribute, None in training (one ``is not None`` check per forward). ``capture_forward`` sets it on every attention
layer and block of the model for one forward pass in eval mode, then restores everything (modes, hooks) and
drops the forward's caches. Each attention layer hands over its q, k, v, mask, causal flag and sliding window as
its kernel sees them (after the projections and RoPE), and the probabilities are recomputed from them with the
reference ``npformer.functional.attention_forward``: P = softmax(scale Q K^T, masked), the same maths the model's
plain or flash kernel runs, whichever it trains with. What is captured comes home as NumPy arrays
(``backend.to_numpy``).

    maps = attention_maps(gpt, ids)          # (L, B, H, T, T)
    maps = attention_maps(encoder, ids)      # (L, B, H, T, T), padding keys get 0
    maps = attention_maps(vit, images)       # (L, B, H, N+1, N+1): the class token, then the N patches
    maps = attention_maps(seq2seq, src, tgt_in)
    maps["encoder"], maps["decoder"], maps["cross"]   # (L, B, H, S, S), (L, B, H, T, T), (L, B, H, T, S)
    cap = capture_forward(gpt, ids)          # both at once: cap.attention["decoder"], cap.blocks["decoder"]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from .. import backend
from ..functional.attention import attention_forward


@dataclass
class BlockActivations:
    """One block's forward: its input and output (B, T, C) and each norm's input and output (B, T, C), by name
    ("norm1", "norm_c", "norm2"), in the order the block applies them."""

    input: np.ndarray
    output: np.ndarray
    norms: dict = field(default_factory=dict)  # name -> (before, after)


@dataclass
class Capture:
    """What one forward pass computed inside, per stack of layers.

    stacks: the model's stacks in the order they ran: "decoder" (GPT), "encoder" (Encoder), or "encoder" and
    "decoder" (EncoderDecoder). attention[stack]: (L, B, H, Tq, Tk) self-attention probabilities;
    attention["cross"]: (L, B, H, T, S) for an encoder-decoder. blocks[stack]: one BlockActivations per layer.
    """

    stacks: tuple
    attention: dict
    blocks: dict


def model_stacks(model) -> dict:
    """{stack name: list of TransformerBlocks} of a GPT ("decoder"), an Encoder or a ViT ("encoder") or an
    EncoderDecoder ("encoder", "decoder"): any model whose blocks are in ``blocks``, or in ``encoder.blocks`` and
    ``dec_blocks``."""
    if hasattr(model, "dec_blocks"):
        return {"encoder": list(model.encoder.blocks), "decoder": list(model.dec_blocks)}
    if hasattr(model, "blocks"):
        causal = all(block.causal for block in model.blocks)
        return {"decoder" if causal else "encoder": list(model.blocks)}
    raise TypeError(f"inspect: a {type(model).__name__} has no Transformer blocks to capture (expected a GPT, an "
                    "Encoder or an EncoderDecoder)")


def _attention_recorder(sink: list):
    """A ``MultiHeadAttention.capture``: recompute P with the reference kernel and keep it on the host."""

    def record(q, k, v, mask, causal, window=None):
        _, cache = attention_forward(q, k, v, mask=mask, causal=causal, window=window)
        sink.append(backend.to_numpy(cache.softmax.y))  # P: (B, H, Tq, Tk)

    return record


def _block_recorder(sink: list):
    def record(x, y, norms):
        sink.append(BlockActivations(backend.to_numpy(x), backend.to_numpy(y),
                                     {name: (backend.to_numpy(a), backend.to_numpy(b)) for name, a, b in norms}))

    return record


@contextlib.contextmanager
def _hooks_on(model, stacks: dict):
    """Capture hooks on every block and attention layer, the model in eval mode; everything restored after."""
    modes = [(m, m.training) for m in model.modules()]
    records = {name: dict(self=[], cross=[], blocks=[]) for name in stacks}
    hooked = []
    try:
        model.eval()
        for name, blocks in stacks.items():
            for block in blocks:
                block.capture = _block_recorder(records[name]["blocks"])
                block.attn.capture = _attention_recorder(records[name]["self"])
                hooked += [block, block.attn]
                if block.has_cross:
                    block.cross.capture = _attention_recorder(records[name]["cross"])
                    hooked.append(block.cross)
        yield records
    finally:
        for m in hooked:
            m.capture = None
        for m, mode in modes:
            m.training = mode
        model.drop_caches()  # the capture's forward has no backward


def capture_forward(model, ids, tgt_in=None) -> Capture:
    """Run one forward pass of ``model`` (eval mode: no dropout) and return what it computed inside.

    ids: (B, T) token ids (a GPT's or an Encoder's input; an EncoderDecoder's source), or a ViT's images
        (B, C, H, W), host or device.
    tgt_in: (B, T) an EncoderDecoder's decoder input. The model's state is unchanged afterwards.
    """
    stacks = model_stacks(model)
    encoder_decoder = "encoder" in stacks and "decoder" in stacks
    if encoder_decoder and tgt_in is None:
        raise ValueError("inspect: an EncoderDecoder needs the decoder's input too: (model, src, tgt_in)")
    if not encoder_decoder and tgt_in is not None:
        raise ValueError(f"inspect: a {type(model).__name__} takes one input; tgt_in is for an EncoderDecoder")
    with _hooks_on(model, stacks) as records:
        if encoder_decoder:
            model.forward(ids, tgt_in)
        else:
            model.hidden_states(ids)
    attention = {name: np.stack(r["self"]) for name, r in records.items()}
    if encoder_decoder:
        attention["cross"] = np.stack(records["decoder"]["cross"])
    return Capture(tuple(stacks), attention, {name: r["blocks"] for name, r in records.items()})


def attention_maps(model, ids, tgt_in=None):
    """Every layer's attention probabilities from one forward pass (the reference maths, whatever kernel the
    model trains with), as NumPy arrays.

    GPT, Encoder, ViT: (L, B, H, T, T); row i of a head is query i's distribution over the keys (zero where the causal
    rule or the padding forbids). EncoderDecoder (ids = src (B, S), tgt_in (B, T)): a dict with "encoder"
    (L_enc, B, H, S, S), "decoder" (L_dec, B, H, T, T) and "cross" (L_dec, B, H, T, S).
    """
    cap = capture_forward(model, ids, tgt_in)
    if len(cap.stacks) == 1:
        return cap.attention[cap.stacks[0]]
    return cap.attention


def block_activations(model, ids, tgt_in=None) -> dict:
    """{stack name: [BlockActivations per layer]} from one forward pass (see ``capture_forward``)."""
    return capture_forward(model, ids, tgt_in).blocks
