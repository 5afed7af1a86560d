"""Greedy decoding and beam search: agreement with a plain reference, with each other (width 1), with and without
the decoder cache, and with exhaustive search on tiny vocabularies."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.decode.beam import beam_search, greedy_decode, length_penalty_factor
from npformer.models import EncoderDecoder, EncoderDecoderConfig

from ..helpers import PAD, padded_ids, randomize_parameters
from ..strategies import seeds, seq2seq_configs

BOS, EOS = 1, 2


def _model(config, seed, scale=0.7):
    """A model with large random weights, each parameter its own draw, so its outputs depend strongly on the input
    (and ties are rare)."""
    return randomize_parameters(EncoderDecoder(config), seed, scale)


def _src(config, seed, B, S):
    return backend.asarray(padded_ids(np.random.default_rng(seed + 1), B, S, config.src_vocab_size)[0])


def _log_probs(model, src_row, prefix):
    """log p(. | src, prefix) at every position of [bos] + prefix, by plain teacher forcing: (len+1, V)."""
    tgt = backend.asarray(np.array([[BOS] + list(prefix)], dtype=np.int64))
    logits = backend.to_numpy(model.forward(src_row, tgt))[0].astype(np.float64)
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


@given(seq2seq_configs(), st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), seeds())
def test_greedy_matches_step_by_step_argmax(xp_backend, config, B, S, max_len, seed):
    """greedy_decode (cached, cross-attention keys projected once) equals re-running the full model on the growing
    prefix and taking the arg-max, row by row; after eos a row holds pad."""
    with backend.float64():
        model = _model(config, seed)
        src = _src(config, seed, B, S)
        out = backend.to_numpy(greedy_decode(model, src, max_len, BOS, EOS))
        assert out.dtype == np.int64 and 1 <= out.shape[1] <= max_len
        for b in range(B):
            prefix, done = [], False
            for t in range(out.shape[1]):
                if done:
                    assert out[b, t] == PAD
                    continue
                nxt = int(_log_probs(model, src[b:b + 1], prefix)[-1].argmax())
                assert out[b, t] == nxt, f"row {b} step {t}: got {out[b].tolist()}, reference prefix {prefix}"
                prefix.append(nxt)
                done = nxt == EOS
            assert done or out.shape[1] == max_len


@given(seq2seq_configs(), st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), seeds(),
       st.sampled_from([0.0, 0.6, 1.0]))
def test_beam_width_one_is_greedy(xp_backend, config, B, S, max_len, seed, alpha):
    with backend.float64():
        model = _model(config, seed)
        src = _src(config, seed, B, S)
        greedy = backend.to_numpy(greedy_decode(model, src, max_len, BOS, EOS))
        beam = backend.to_numpy(beam_search(model, src, 1, max_len, BOS, EOS, length_penalty=alpha))
        np.testing.assert_array_equal(beam, greedy)


@given(seq2seq_configs(), st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), seeds(),
       st.sampled_from([0.0, 0.6]))
def test_cached_decoding_equals_recomputing_the_prefix(xp_backend, config, B, S, max_len, K, seed, alpha):
    with backend.float64():
        model = _model(config, seed)
        src = _src(config, seed, B, S)
        g1 = backend.to_numpy(greedy_decode(model, src, max_len, BOS, EOS, use_cache=True))
        g0 = backend.to_numpy(greedy_decode(model, src, max_len, BOS, EOS, use_cache=False))
        np.testing.assert_array_equal(g1, g0)
        b1, s1 = beam_search(model, src, K, max_len, BOS, EOS, alpha, use_cache=True, return_scores=True)
        b0, s0 = beam_search(model, src, K, max_len, BOS, EOS, alpha, use_cache=False, return_scores=True)
        np.testing.assert_array_equal(backend.to_numpy(b1), backend.to_numpy(b0))
        np.testing.assert_allclose(backend.to_numpy(s1), backend.to_numpy(s0), rtol=1e-9)


def _best_by_enumeration(model, src_row, V, max_len, alpha):
    """The best normalised score over every hypothesis: ended by eos at any length <= max_len, or max_len long."""
    best = -math.inf
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (seq[-1] != EOS and n < max_len):
                continue  # eos only at the end; unfinished hypotheses only at full length
            logp = _log_probs(model, src_row, seq[:-1])
            total = float(sum(logp[i, tok] for i, tok in enumerate(seq)))
            best = max(best, total / float(length_penalty_factor(np.float64(n), alpha)))
    return best


@given(seq2seq_configs(), st.integers(1, 3), st.integers(1, 3), seeds(), st.sampled_from([0.0, 0.6, 1.0]))
def test_wide_beam_is_exhaustive_search(xp_backend, config, S, max_len, seed, alpha):
    """With K >= V ** max_len beams nothing is pruned: beam search returns the best hypothesis of all, and its
    score is that hypothesis' log-probability / lp (checked against teacher forcing)."""
    V = min(config.tgt_vocab_size, 4)  # V ** max_len hypotheses: keep the enumeration small
    config = EncoderDecoderConfig.from_dict({**config.to_dict(), "tgt_vocab_size": V,
                                             **({"src_vocab_size": V} if config.share_embeddings else {})})
    with backend.float64():
        model = _model(config, seed)
        src = _src(config, seed, 1, S)
        tokens, score = beam_search(model, src, V**max_len, max_len, BOS, EOS, alpha, return_scores=True)
        tokens, score = backend.to_numpy(tokens)[0].tolist(), float(backend.to_numpy(score)[0])
        assert score == pytest.approx(_best_by_enumeration(model, src, V, max_len, alpha), rel=1e-9, abs=1e-12)
        seq = tokens[:tokens.index(EOS) + 1] if EOS in tokens else tokens
        logp = _log_probs(model, src, seq[:-1])
        recomputed = sum(logp[i, tok] for i, tok in enumerate(seq)) / length_penalty_factor(np.float64(len(seq)),
                                                                                            alpha)
        assert score == pytest.approx(float(recomputed), rel=1e-9, abs=1e-12)


def _reference_beam(model, src_row, K, V, max_len, alpha):
    """Beam search written the plain way, one hypothesis at a time: (tokens, raw log-prob, finished) triples;
    a finished hypothesis stays as it is (its length frozen), the others grow by every token; keep the K best by
    log-prob / lp(length), ties to the earlier candidate. Returns the best (tokens, normalised score)."""
    def norm(h):
        return h[1] / float(length_penalty_factor(np.float64(len(h[0])), alpha))

    beams = [((), 0.0, False)]
    for _ in range(max_len):
        candidates = []
        for h in beams:
            if h[2]:
                candidates.append(h)
                continue
            logp = _log_probs(model, src_row, h[0])[-1]
            candidates += [(h[0] + (v,), h[1] + float(logp[v]), v == EOS) for v in range(V)]
        beams = sorted(candidates, key=lambda h: -norm(h))[:K]  # sorted() is stable
        if all(h[2] for h in beams):
            break
    best = max(beams, key=norm)
    return list(best[0]), norm(best)


@given(seq2seq_configs(), st.integers(1, 3), st.integers(2, 4), st.integers(2, 3), seeds(),
       st.sampled_from([0.0, 0.6, 1.0, 2.0]))
def test_beam_search_matches_a_plain_reference(xp_backend, config, S, max_len, K, seed, alpha):
    """Pruned search (K < V ** max_len): the same best hypothesis and score as the one-hypothesis-at-a-time
    reference, so finished hypotheses compete with their own (frozen) length at every step."""
    V = config.tgt_vocab_size
    with backend.float64():
        model = _model(config, seed, scale=0.3)
        src = _src(config, seed, 1, S)
        tokens, score = beam_search(model, src, K, max_len, BOS, EOS, alpha, return_scores=True)
        tokens = backend.to_numpy(tokens)[0].tolist()
        want_tokens, want_score = _reference_beam(model, src, K, V, max_len, alpha)
        assert tokens[:len(want_tokens)] == want_tokens and all(t == PAD for t in tokens[len(want_tokens):])
        assert float(backend.to_numpy(score)[0]) == pytest.approx(want_score, rel=1e-9, abs=1e-12)


class _ScriptedModel:
    """A stand-in decoder whose next-token distribution is a table keyed by the prefix (uniform elsewhere):
    just what beam_search reads from an EncoderDecoder, with the prefix recomputed (use_cache=False)."""

    class _Cross:
        @staticmethod
        def project_context(memory):
            return memory[:, None], memory[:, None]

    class _Block:
        def __init__(self):
            self.cross = _ScriptedModel._Cross()

    class _Config:
        tgt_vocab_size, pad_id, positions, max_len = 5, PAD, "sinusoidal", 16

    def __init__(self, table):
        self.table, self.config, self.training = table, self._Config(), False
        self.dec_blocks = [self._Block()]

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def encode(self, src):
        return np.zeros((src.shape[0], 1, 1)), np.ones((src.shape[0], 1, 1, 1), dtype=bool)

    def decode(self, tokens, context_kv=None, context_mask=None):
        N, t = tokens.shape
        logits = np.zeros((N, t, self.config.tgt_vocab_size))
        for r in range(N):
            prefix = tuple(tokens[r, 1:].tolist())
            p = np.full(5, 1e-6)
            if prefix not in self.table:
                p[2:] = 1.0 / 3.0
            for tok, prob in self.table.get(prefix, {}).items():
                p[tok] = prob
            logits[r, -1] = np.log(p / p.sum())
        return logits


def test_finished_hypotheses_compete_with_their_own_length():
    """A hand-made case where the answer depends on ranking a finished hypothesis by its own (frozen) length
    during the search. With alpha = 1 and K = 2: after step 1 the beam holds [3] and the finished [eos]
    (log 0.3, lp 1: -1.204). At step 2, [3 4] and [3 3] score log(0.5 * 0.495) / lp(2) ~ -1.197, just above
    [eos]'s -1.204, so both stay and [eos] is dropped; [3 3] then ends with certainty: [3 3 eos] scores
    log(0.247) / lp(3) ~ -1.049, the best. Ranking [eos] at the current length instead (-1.204 / lp(2)
    = -1.032) would keep it, lose [3 3], and return [eos]."""
    table = {(): {EOS: 0.3, 3: 0.5, 4: 0.2}, (3,): {3: 0.494, 4: 0.496, EOS: 0.01},
             (3, 3): {EOS: 1.0}, (3, 4): {EOS: 0.5, 3: 0.5}}
    model = _ScriptedModel(table)
    tokens, score = beam_search(model, np.zeros((1, 1), dtype=np.int64), 2, 4, BOS, EOS, length_penalty=1.0,
                                use_cache=False, return_scores=True)
    assert backend.to_numpy(tokens)[0].tolist()[:3] == [3, 3, EOS]
    expected = math.log(0.5 * 0.494) / ((5 + 3) / 6)  # (pad and bos have probability 1e-6)
    assert float(score[0]) == pytest.approx(expected, rel=1e-4)


def test_decoding_restores_the_mode_and_validates_arguments():
    cfg = EncoderDecoderConfig(src_vocab_size=6, tgt_vocab_size=5, max_len=4, n_encoder_layer=1,
                               n_decoder_layer=1, n_head=1, n_embd=4, dropout=0.1)
    model = EncoderDecoder(cfg)
    src = np.array([[3, 4, 0]])
    out = greedy_decode(model, src, 4, BOS, EOS)
    assert model.training and out.dtype == np.int64
    model.eval()
    beam_search(model, src, 2, 4, BOS, EOS)
    assert not model.training
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, src, 0, 4, BOS, EOS)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(model, src, 2, 4, BOS, EOS, length_penalty=-1.0)
    with pytest.raises(ValueError, match="exceeds the model's learned positions"):
        greedy_decode(model, src, 5, BOS, EOS)
    with pytest.raises(ValueError, match="eos=7"):
        greedy_decode(model, src, 3, BOS, 7)


def test_float32_decoding():
    cfg = EncoderDecoderConfig(src_vocab_size=6, tgt_vocab_size=5, max_len=6, n_encoder_layer=1,
                               n_decoder_layer=2, n_head=2, n_embd=8)
    model = _model(cfg, 0)
    src = backend.asarray(np.array([[3, 4, 5], [5, 0, 0]]))
    tokens, scores = beam_search(model, src, 3, 6, BOS, EOS, 0.6, return_scores=True)
    assert tokens.dtype == np.int64 and scores.dtype == np.float64 and np.isfinite(backend.to_numpy(scores)).all()
