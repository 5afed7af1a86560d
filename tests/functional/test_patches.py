"""The ViT's patchify pair (npformer.functional.patches): where every pixel goes, the backward as the inverse
permutation (and finite differences), equality with a strided convolution (PyTorch as the oracle), bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.functional.patches import patches_backward, patches_forward
from npformer.gradcheck import check_gradients

from ..strategies import GRAD_ATOL, GRAD_RTOL, normal_array, seeds


@st.composite
def image_cases(draw):
    """(images (B, C, H, W) float64 on the host, p) with p dividing H and W."""
    p = draw(st.integers(1, 3))
    B, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    gh, gw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return normal_array(draw(seeds()), (B, C, gh * p, gw * p)), p


@given(image_cases())
def test_every_pixel_lands_in_its_patch(xp_backend, case):
    """patches[b, n, (c, i, j)] = images[b, c, p*(n // gw) + i, p*(n % gw) + j], written as loops."""
    images, p = case
    B, C, H, W = images.shape
    gw = W // p
    got, _ = patches_forward(backend.asarray(images), p)
    got = backend.to_numpy(got)
    assert got.shape == (B, (H // p) * gw, C * p * p)
    want = np.empty_like(got)
    for n in range((H // p) * gw):
        r, c0 = divmod(n, gw)
        for c in range(C):
            for i in range(p):
                for j in range(p):
                    want[:, n, (c * p + i) * p + j] = images[:, c, r * p + i, c0 * p + j]
    np.testing.assert_array_equal(got, want)


@given(image_cases(), seeds())
def test_backward_is_the_inverse_permutation(xp_backend, case, seed):
    """Forward only moves entries, so backward(forward(x)) = x, and <forward(x), g> = <x, backward(g)>."""
    images, p = case
    x = backend.asarray(images)
    patches, cache = patches_forward(x, p)
    np.testing.assert_array_equal(backend.to_numpy(patches_backward(patches, cache)), images)
    g = normal_array(seed, tuple(patches.shape))
    lhs = float((backend.to_numpy(patches) * g).sum())
    rhs = float((images * backend.to_numpy(patches_backward(backend.asarray(g), cache))).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@given(image_cases())
def test_gradients_match_finite_differences(xp_backend, case):
    images, p = case
    report = check_gradients(lambda images: patches_forward(images, p), patches_backward,
                             dict(images=backend.asarray(images)), wrt=("images",), rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"images {images.shape}, p={p}\n{report}"


@given(image_cases(), seeds())
def test_patchify_then_linear_is_a_strided_convolution(case, seed):
    """patches @ W.reshape(E, P).T + b equals torch's Conv2d(C, E, kernel_size=p, stride=p), flattened over the
    grid: the order inside a patch is the convolution weight's (c, i, j)."""
    torch = pytest.importorskip("torch")
    images, p = case
    B, C, H, W = images.shape
    E = 3
    rng = np.random.default_rng(seed)
    weight, bias = rng.standard_normal((E, C, p, p)), rng.standard_normal(E)
    patches, _ = patches_forward(images, p)
    ours = patches @ weight.reshape(E, -1).T + bias  # (B, N, E)
    conv = torch.nn.functional.conv2d(torch.from_numpy(images), torch.from_numpy(weight), torch.from_numpy(bias),
                                      stride=p)  # (B, E, gh, gw)
    theirs = conv.flatten(2).transpose(1, 2).numpy()  # (B, N, E), row-major over the grid
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_bad_input_is_refused(xp_backend):
    x = backend.asarray(normal_array(0, (1, 1, 4, 6)))
    with pytest.raises(ValueError, match="does not divide the image size 4x6"):
        patches_forward(x, 4)
    for p in (0, -2, True, 2.0):
        with pytest.raises(ValueError, match="patch size must be a positive integer"):
            patches_forward(x, p)
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\)"):
        patches_forward(x[0], 2)
    with pytest.raises(TypeError, match="float array"):
        patches_forward(backend.asarray(np.zeros((1, 1, 4, 4), dtype=np.int64)), 2)
    _, cache = patches_forward(x, 2)
    with pytest.raises(ValueError, match="dpatches must have shape"):
        patches_backward(backend.asarray(normal_array(0, (1, 6, 3))), cache)
