"""npformer's GPT against a PyTorch GPT of the same shape (llm.c's test_gpt2 idea): logits, loss, every gradient,
and a few AdamW steps, in float64. Skips cleanly without torch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npformer import backend
from npformer.models import GPT, GPTConfig
from npformer.train.optim import AdamW, param_groups

torch = pytest.importorskip("torch")
from ..helpers import randomize_parameters  # noqa: E402
from ..torch_gpt import TorchGPT  # noqa: E402

# float64 on both sides: agreement to ~1e-10 relative is expected; 1e-8 leaves room for summation order.
RTOL = 1e-8


def _pair(V, T, L, H, C, bias=True, seed=0):
    """Our GPT with every parameter drawn on its own (norm weights and biases too, not ones and zeros, so a
    wrong mapping between same-shaped parameters shows) and torch's with the same values."""
    with backend.float64():
        ours = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, bias=bias))
        randomize_parameters(ours, seed, scale=0.3)
    theirs = TorchGPT(V, T, L, H, C, bias=bias).double()
    theirs.load_from_npformer(ours.state_dict(), L)
    return ours, theirs


@settings(max_examples=5)
@given(st.integers(2, 20), st.integers(1, 6), st.integers(1, 2), st.sampled_from([(1, 4), (2, 8), (4, 8)]),
       st.integers(0, 1000), st.booleans())
def test_gpt_matches_torch(V, T, L, HC, seed, bias):
    """With and without biases (nanoGPT's train.py defaults to none)."""
    H, C = HC
    ours, theirs = _pair(V, T, L, H, C, bias, seed)
    assert len(theirs.name_map(L)) == len(dict(ours.named_parameters()))
    rng = np.random.default_rng(seed)
    idx, tgt = rng.integers(0, V, size=(2, T)), rng.integers(0, V, size=(2, T))
    loss = ours.loss(idx, tgt)
    logits = backend.to_numpy(ours.forward(idx))
    ours.loss(idx, tgt)
    ours.backward()
    t_loss, t_logits = theirs(torch.from_numpy(idx), torch.from_numpy(tgt))
    t_loss.backward()
    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(backend.to_float(loss), t_loss.item(), rtol=RTOL)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        tname, transpose = theirs.name_map(L)[name]
        g = grads[tname].grad.numpy()
        np.testing.assert_allclose(backend.to_numpy(p.grad), g.T if transpose else g, rtol=1e-7, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("bias", [True, False])
def test_adamw_training_matches_torch(bias):
    """Five AdamW steps with nanoGPT's parameter groups give the same parameters as torch.optim.AdamW."""
    V, T, L, H, C = 11, 5, 1, 2, 8
    ours, theirs = _pair(V, T, L, H, C, bias)
    opt = AdamW(param_groups(ours.named_parameters(), 0.1), lr=1e-2, betas=(0.9, 0.99))
    tparams = dict(theirs.named_parameters())
    decay = [tparams[theirs.name_map(L)[n][0]] for n, p in ours.named_parameters() if not p.no_decay]
    no_decay = [tparams[theirs.name_map(L)[n][0]] for n, p in ours.named_parameters() if p.no_decay]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.9, 0.99))
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx, tgt = rng.integers(0, V, size=(3, T)), rng.integers(0, V, size=(3, T))
        ours.zero_grad()
        ours.loss(idx, tgt)
        ours.backward()
        opt.step()
        topt.zero_grad()
        theirs(torch.from_numpy(idx), torch.from_numpy(tgt))[0].backward()
        topt.step()
    for name, p in ours.named_parameters():
        tname, transpose = theirs.name_map(L)[name]
        t = tparams[tname].detach().numpy()
        np.testing.assert_allclose(backend.to_numpy(p.data), t.T if transpose else t, rtol=1e-7, atol=1e-10,
                                   err_msg=name)
