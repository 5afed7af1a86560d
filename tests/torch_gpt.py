"""A PyTorch GPT of the same shape as npformer's gpt2-style GPT (pre-LN, GELU-tanh, learned positions, biases or
none, tied embeddings): the oracle for whole-model tests and the reference for the training-step benchmark.

Only tests and benchmarks import this file, and only when torch is installed; npformer itself never does.
Parameter names map one to one onto npformer's (see ``load_from_npformer``).
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, C, H, F_hidden, bias=True):
        super().__init__()
        self.H = H
        self.ln1 = nn.LayerNorm(C, bias=bias)
        self.qkv = nn.Linear(C, 3 * C, bias=bias)
        self.proj = nn.Linear(C, C, bias=bias)
        self.ln2 = nn.LayerNorm(C, bias=bias)
        self.fc = nn.Linear(C, F_hidden, bias=bias)
        self.fc_proj = nn.Linear(F_hidden, C, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TorchGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, ffn_hidden=None, bias=True):
        super().__init__()
        self.bias = bias
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, ffn_hidden or 4 * n_embd, bias) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight",)) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)), logits

    # npformer name -> (torch name, transpose?)
    def name_map(self, n_layer):
        m = {"wte.weight": ("wte.weight", False), "wpe.weight": ("wpe.weight", False),
             "norm_f.weight": ("ln_f.weight", False)}
        if self.bias:
            m["norm_f.bias"] = ("ln_f.bias", False)
        for i in range(n_layer):
            for ours, theirs in (("norm1", "ln1"), ("norm2", "ln2"), ("attn.qkv", "qkv"), ("attn.proj", "proj"),
                                 ("ffn.fc", "fc"), ("ffn.proj", "fc_proj")):
                m[f"blocks.{i}.{ours}.weight"] = (f"blocks.{i}.{theirs}.weight", "norm" not in ours)
                if self.bias:
                    m[f"blocks.{i}.{ours}.bias"] = (f"blocks.{i}.{theirs}.bias", False)
        return m

    def load_from_npformer(self, state: dict, n_layer: int):
        """Copy npformer's state dict (NumPy arrays) in; npformer stores linear weights (C_in, C_out)."""
        own = dict(self.named_parameters())
        with torch.no_grad():
            for ours, (theirs, transpose) in self.name_map(n_layer).items():
                value = state[ours].T if transpose else state[ours]
                own[theirs].copy_(torch.from_numpy(np.ascontiguousarray(value)))
