"""Helpers shared by the tests that are not hypothesis strategies (those live in tests/strategies.py).

No test file imports another test file: what two of them share lives here or in strategies.py.
"""

import math

import numpy as np

from npformer import backend
from npformer.nn import Dropout

PAD = 0  # the padding token id of the encoder and encoder-decoder tests

# A stream of its own for parameters: default_rng(seed) is what tests draw their inputs from (normal_array), and
# a layer's weights must not equal its input because both came from one seed.
_PARAMETER_STREAM = 0x5EED_9A8A


def randomize_parameters(model, seed, scale=0.5):
    """Give every parameter of ``model`` its own random values, in place; returns the model.

    One generator, one fresh draw per parameter in ``model.parameters()`` order (tied parameters are one object
    and get one draw), N(0, scale^2), norm weights and biases included: at their init (ones and zeros) every
    LayerNorm's weight would equal every other and each bias would be zero, so a backward that read the wrong
    same-shaped parameter, or forgot a bias term, would still pass. Larger than the 0.02 init, so every path of a
    gradient check carries signal. ``seed``: an int (a stream apart from ``default_rng(seed)``) or a Generator.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([_PARAMETER_STREAM, seed])
    for p in model.parameters():
        p.data[...] = backend.asarray(rng.standard_normal(p.shape) * scale, dtype=p.data.dtype)
    return model


def reseed_dropout(model):
    """Put every Dropout back to its first masks (``Dropout.reset``), so each forward after this draws the same
    masks (finite differences then see one fixed function; data-parallel replicas draw theirs from the model's)."""
    for m in model.modules():
        if isinstance(m, Dropout):
            m.reset()


def on_backend(case):
    """A dict of host arrays (and options) with the arrays moved to the active backend."""
    return {name: backend.asarray(a) if isinstance(a, np.ndarray) else a for name, a in case.items()}


def padded_ids(rng, B, T, vocab_size, min_len=1):
    """(B, T) ids with real tokens in [1, V) and uneven right padding (every row keeps >= min_len tokens).

    Returns (ids, lengths); row 0 is full, so T is really used.
    """
    ids = rng.integers(1, vocab_size, size=(B, T))
    lengths = rng.integers(min_len, T + 1, size=B)
    lengths[0] = T
    ids[np.arange(T)[None, :] >= lengths[:, None]] = PAD
    return ids, lengths


def lm_batch(rng, vocab_size, B, T, ignore_fraction):
    """A language-model batch (x, y), each (B, T): about ``ignore_fraction`` of the targets ignored (-100); with a
    fraction strictly between 0 and 1, row 0 keeps exactly one target, so chunks of a split keep uneven counts."""
    x = rng.integers(0, vocab_size, size=(B, T))
    y = rng.integers(0, vocab_size, size=(B, T))
    y[rng.random((B, T)) < ignore_fraction] = -100
    if 0.0 < ignore_fraction < 1.0:
        y[0, 1:] = -100
        y[0, 0] = 0
    return x, y


# ---------------------------------------------------------------------------------------------------------------
# attention: the definition, and the inputs every attention pair must refuse
# ---------------------------------------------------------------------------------------------------------------
def allowed_matrix(B, H, Tq, Tk, mask, causal):
    """(B, H, Tq, Tk) boolean: True where query i may attend to key j (the mask and the causal rule)."""
    allowed = np.ones((B, H, Tq, Tk), dtype=bool)
    if mask is not None:
        allowed &= np.broadcast_to(mask, allowed.shape)
    if causal:
        allowed &= np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq)
    return allowed


def reference_attention(q, k, v, mask=None, causal=False, scale=None):
    """Row by row, in float64, with kv heads repeated explicitly: the definition, not the implementation."""
    q, k, v = (np.asarray(backend.to_numpy(a), dtype=np.float64) for a in (q, k, v))
    B, H, Tq, D = q.shape
    Tk, G = k.shape[2], H // k.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    allowed = allowed_matrix(B, H, Tq, Tk, None if mask is None else backend.to_numpy(mask), causal)
    out = np.zeros((B, H, Tq, D))
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                keys = np.flatnonzero(allowed[b, h, i])
                if keys.size == 0:
                    continue
                s = np.array([scale * q[b, h, i] @ k[b, h // G, j] for j in keys])
                w = np.exp(s - s.max())
                w /= w.sum()
                out[b, h, i] = w @ v[b, h // G, keys]
    return out


def _arr(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


# (inputs, error type, message after "<op>: ") for every attention pair
ATTENTION_BAD_INPUTS = [
    (dict(q=_arr(2, 4, 8), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8)), ValueError, r"q must be 4-D"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 4, 8)), ValueError, r"k has shape .* but v"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(2, 4, 3, 6), v=_arr(2, 4, 3, 6)), ValueError,
     r"q has head size D=8 but k and v have D=6"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(3, 4, 3, 8), v=_arr(3, 4, 3, 8)), ValueError,
     r"q has batch size 2 but k and v have 3"),
    (dict(q=_arr(2, 8, 5, 8), k=_arr(2, 3, 3, 8), v=_arr(2, 3, 3, 8)), ValueError,
     r"k has 3 heads, which does not divide q's 8 heads"),
    (dict(q=_arr(2, 4, 5, 8, dtype=np.float32), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8)), TypeError,
     r"q, k and v must share one dtype"),
    (dict(q=_arr(2, 4, 5, 8, dtype=np.int64), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8)), TypeError,
     r"q must be a float array"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8), mask=np.ones((2, 1, 5, 4), dtype=bool)),
     ValueError, r"mask of shape \(2, 1, 5, 4\) does not broadcast to \(B, H, Tq, Tk\) = \(2, 4, 5, 3\)"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8), mask=np.ones((1, 2, 1, 5, 3), dtype=bool)),
     ValueError, r"mask of shape .* does not broadcast"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8), mask=np.ones((5, 3))), TypeError,
     r"mask must be boolean"),
    (dict(q=_arr(2, 4, 5, 8), k=_arr(2, 4, 3, 8), v=_arr(2, 4, 3, 8), scale=float("nan")), ValueError,
     r"scale must be finite"),
]


def interruptible():
    """A ``preexec_fn`` for a subprocess that a test interrupts with SIGINT (Ctrl-C): the child starts with SIGINT's
    default action, whatever this process inherited. A shell without job control starts its background jobs with
    SIGINT ignored, an ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt
    handler: the child would never see the test's Ctrl-C (it happened with the suite run from `cmd &`)."""
    import signal

    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
