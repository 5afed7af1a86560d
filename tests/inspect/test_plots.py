"""Every picture is drawn headless into a non-empty PNG, and what it shows is checked as data: heatmaps read back
from the figure are probabilities where they should be, masks equal the definition of attention's rule, the
sinusoidal table is its formula, RoPE's scores depend on the offset alone, histograms count every value, and the
gradient-flow lines are the recorded norms. Without matplotlib, the error names the extra to install."""

import sys

import numpy as np
import pytest

from npformer import backend
from npformer.inspect import capture_forward, head_summary
from npformer.inspect.figures import MissingPlotExtra
from npformer.models import GPT, GPTConfig

from ..helpers import allowed_matrix

pytest.importorskip("matplotlib")

from npformer.inspect import plots, positions  # noqa: E402


def assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@pytest.fixture(scope="module")
def gpt_capture():
    cfg = GPTConfig(vocab_size=12, block_size=8, n_layer=2, n_head=3, n_embd=12)
    model = GPT(cfg)
    ids = np.random.default_rng(0).integers(0, 12, (2, 7))
    return model, capture_forward(model, ids)


def test_attention_heatmaps_are_causal_probabilities(tmp_path, gpt_capture):
    _, cap = gpt_capture
    maps = cap.attention["decoder"]  # (L, B, H, T, T)
    tokens = list("def ma(")
    pic = plots.plot_attention(maps, str(tmp_path / "a.png"), tokens, batch=1)
    assert_png(pic.path)
    assert len(pic.images) == 2 * 3  # layers x heads, row by row
    causal = allowed_matrix(1, 1, 7, 7, None, causal=True)[0, 0]
    for i, image in enumerate(pic.images):
        l, h = divmod(i, 3)
        np.testing.assert_array_equal(image, maps[l, 1, h])
        assert (image[~causal] == 0).all()
        np.testing.assert_allclose(image.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="3 queries tokens for 7 positions"):
        plots.plot_attention(maps, str(tmp_path / "b.png"), tokens[:3])


def test_head_summary_picture(tmp_path, gpt_capture):
    summary = head_summary(gpt_capture[1].attention["decoder"])
    pic = plots.plot_head_summary(summary, str(tmp_path / "h.png"))
    assert_png(pic.path)
    for image, values in zip(pic.images, (summary.entropy, summary.distance, summary.previous_token,
                                          summary.first_token)):
        np.testing.assert_array_equal(image, values)
    assert len(pic.texts) == 4 * 2 * 3


def test_masks_are_attentions_rule(tmp_path):
    pic = plots.plot_masks(str(tmp_path / "m.png"), T=6, length=4, S=5, source_length=3)
    assert_png(pic.path)
    causal, padding, both, cross = (image.astype(bool) for image in pic.images)
    valid = (np.arange(6) < 4).reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(causal, allowed_matrix(1, 1, 6, 6, None, causal=True)[0, 0])
    np.testing.assert_array_equal(padding, allowed_matrix(1, 1, 6, 6, valid, causal=False)[0, 0])
    np.testing.assert_array_equal(both, allowed_matrix(1, 1, 6, 6, valid, causal=True)[0, 0])
    source = (np.arange(5) < 3).reshape(1, 1, 1, 5)
    np.testing.assert_array_equal(cross, allowed_matrix(1, 1, 6, 5, source, causal=False)[0, 0])
    assert not np.triu(causal, 1).any() and padding[:, 4:].sum() == 0 and cross[:, 3:].sum() == 0


def test_sinusoidal_table_is_its_formula(tmp_path):
    pic = positions.plot_sinusoidal_table(str(tmp_path / "s.png"), T=20, C=8)
    assert_png(pic.path)
    p, i = np.arange(20)[:, None], np.arange(4)[None, :]
    angle = p / 10000 ** (2 * i / 8)
    np.testing.assert_allclose(pic.images[0][:, 0::2], np.sin(angle), atol=1e-12)
    np.testing.assert_allclose(pic.images[0][:, 1::2], np.cos(angle), atol=1e-12)


def test_position_similarity_and_ropes_offset_check(tmp_path, gpt_capture):
    model, _ = gpt_capture
    learned = backend.to_numpy(model.wpe.weight.data)
    pic = positions.plot_position_similarity(str(tmp_path / "p.png"), T=8, C=12, learned=learned, head_dim=6)
    assert_png(pic.path)
    sinusoidal, learned_sim, rope = pic.images
    np.testing.assert_allclose(np.diag(sinusoidal), 12 / 2)  # sin^2 + cos^2 = 1 per pair of channels
    np.testing.assert_allclose(learned_sim, learned @ learned.T, rtol=1e-6)
    for d in range(-7, 8):  # RoPE: each diagonal constant, the score a function of the offset alone
        diagonal = np.diagonal(rope, offset=d)
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-12, atol=1e-12)
    assert pic.data["rope_offset_error"] < 1e-12
    assert any("max deviation" in t and "e-1" in t for t in pic.texts)  # the check is written on the plot
    off_diagonal = rope - np.diag(np.diag(rope))
    assert np.abs(off_diagonal).max() > 0  # and the scores do vary with the offset


def test_rope_offset_error_sees_a_position_dependent_score():
    S = np.add.outer(np.arange(5.0), np.zeros(5))  # depends on m, not on n - m
    assert positions.rope_offset_error(S) > 1.0


def test_norm_histograms_count_every_value(tmp_path, gpt_capture):
    """At initialisation (LayerNorm weight 1, bias 0) each token leaves a norm with mean 0 and variance
    var / (var + eps): 1 but for the epsilon."""
    _, cap = gpt_capture
    blocks = cap.blocks["decoder"]
    pic = plots.plot_norm_histograms(blocks, str(tmp_path / "n.png"), bins=30)
    assert_png(pic.path)
    n_values = 2 * 7 * 12  # B T C
    assert len(pic.bars) == 2 * 2  # layers x norms
    for bars in pic.bars:
        assert bars.sum() == 2 * n_values  # the before and the after histogram, every value in a bin
    for l, block in enumerate(blocks):
        for name, (before, after) in block.norms.items():
            np.testing.assert_array_equal(pic.data[f"layer{l}.{name}"][0], before.reshape(-1))
            np.testing.assert_allclose(after.mean(axis=-1), 0.0, atol=1e-5)
            var = before.astype(np.float64).var(axis=-1)
            np.testing.assert_allclose(after.var(axis=-1), var / (var + 1e-5), rtol=1e-3)


def test_gradient_flow_lines_are_the_records(tmp_path):
    rows = [dict(step=s, layer=layer, grad_norm=g * s, update_ratio=1e-3 / s)
            for s in (10, 20, 30) for layer, g in (("wte", 1.0), ("blocks.0", 0.5))]
    pic = plots.plot_gradient_flow(rows, str(tmp_path / "g.png"))
    assert_png(pic.path)
    wte_grad, block_grad, wte_ratio, block_ratio, reference = pic.lines
    np.testing.assert_allclose(wte_grad, [10, 20, 30])
    np.testing.assert_allclose(block_grad, [5, 10, 15])
    np.testing.assert_allclose(block_ratio, [1e-4, 5e-5, 1e-3 / 30])
    np.testing.assert_allclose(reference, [1e-3, 1e-3])
    with pytest.raises(ValueError, match="no gradient-flow records"):
        plots.plot_gradient_flow([], str(tmp_path / "none.png"))


def test_without_matplotlib_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingPlotExtra, match=r"pip install 'npformer\[plot\]'"):
        plots.plot_masks(str(tmp_path / "m.png"))
    assert not (tmp_path / "m.png").exists()
