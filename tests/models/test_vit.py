"""The Vision Transformer: gradients of every parameter and of the images against finite differences (float64,
drawn configurations), host inputs for device models, both kernel tiers equal, bad input refused, and learning a
task that only attention between patch positions can solve."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.gradcheck import check_model
from npformer.kernels import use_kernels
from npformer.models import ViT, ViTConfig
from npformer.train.optim import AdamW

from ..helpers import randomize_parameters
from ..strategies import GRAD_ATOL, GRAD_RTOL, TOL, kernel_fields, normal_array, seeds


@st.composite
def vit_configs(draw):
    """Tiny ViTConfigs over the option space: patch sizes, channels, pooling, norms, placements, FFN kinds."""
    patch = draw(st.integers(1, 2))
    n_head = draw(st.integers(1, 2))
    return ViTConfig(image_size=patch * draw(st.integers(1, 2)), patch_size=patch, in_channels=draw(st.integers(1, 2)),
                     n_classes=draw(st.integers(2, 3)), n_layer=draw(st.integers(1, 2)), n_head=n_head,
                     n_embd=2 * n_head, ffn_hidden=draw(st.integers(1, 4)),
                     ffn_kind=draw(st.sampled_from(["relu", "gelu", "swiglu"])),
                     norm=draw(st.sampled_from(["layernorm", "rmsnorm"])),
                     norm_placement=draw(st.sampled_from(["pre", "post"])), bias=draw(st.booleans()),
                     pooling=draw(st.sampled_from(["first", "mean"])), attn_impl=draw(st.sampled_from(["plain",
                     "flash"])), kernels=draw(kernel_fields()), seed=draw(st.integers(0, 100)))


def float64_vit(cfg, seed):
    with backend.float64():
        return randomize_parameters(ViT(cfg).astype(np.float64), seed)


@given(cfg=vit_configs(), seed=seeds(), B=st.integers(1, 2))
def test_gradients_match_finite_differences(xp_backend, cfg, seed, B):
    """Every parameter (patch embedding, class token, positions, blocks, head) and the images themselves."""
    model = float64_vit(cfg, seed)
    images = backend.asarray(normal_array(seed, (B, cfg.in_channels, cfg.image_size, cfg.image_size)))
    labels = np.random.default_rng(seed).integers(0, cfg.n_classes, size=B)
    got = {}

    def backward():
        got["images"] = model.backward()

    with backend.float64():
        report = check_model(lambda: model.loss(images, labels), backward, model.named_parameters(),
                             inputs=dict(images=images), input_grads=lambda: got, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert report.passed, f"{cfg}\n{report}"


def test_class_token_and_positions_get_gradients(xp_backend):
    """The class token's gradient is the sum over the batch of the first token's, the position table's the sum
    over the batch: both nonzero after one backward, and a batch of two identical images doubles them."""
    model = float64_vit(ViTConfig(image_size=4, patch_size=2, n_classes=3, n_layer=1, n_head=2, n_embd=8), 0)
    image = normal_array(1, (1, 1, 4, 4))
    grads = []
    for batch in (image, np.concatenate([image, image])):
        model.zero_grad()
        model.loss(batch, np.zeros(batch.shape[0], dtype=np.int64))
        model.backward(dloss=float(batch.shape[0]))  # the loss is a mean: undo it, so two images count twice
        grads.append((backend.to_numpy(model.cls_token.grad).copy(), backend.to_numpy(model.pos.weight.grad).copy()))
    assert np.abs(grads[0][0]).max() > 0 and np.abs(grads[0][1]).max() > 0
    np.testing.assert_allclose(grads[1][0], 2 * grads[0][0], rtol=1e-10)
    np.testing.assert_allclose(grads[1][1], 2 * grads[0][1], rtol=1e-10)


def test_host_inputs_three_dimensional_images_and_tiers(xp_backend):
    """NumPy images (uint8 or float, (B, H, W) for one channel) and labels work on either backend; both tiers
    give the same logits."""
    cfg = ViTConfig(image_size=4, patch_size=2, n_classes=3, n_layer=1, n_head=2, n_embd=8)
    model = float64_vit(cfg, 3)
    images = np.random.default_rng(0).integers(0, 17, size=(3, 4, 4)).astype(np.uint8)
    with use_kernels("reference"):
        ref = backend.to_numpy(model.classify(images))
    with use_kernels("fast"):
        fast = backend.to_numpy(model.classify(images.astype(np.float32)[:, None]))
    rtol, atol = TOL[np.dtype(np.float64)]
    np.testing.assert_allclose(fast, ref, rtol=rtol, atol=atol)
    loss = model.loss(images, np.array([0, 1, 2]))
    assert np.isfinite(backend.to_float(loss))
    dimages = model.backward()
    assert dimages.shape == (3, 1, 4, 4)


def test_bad_input_is_refused(xp_backend):
    model = ViT(ViTConfig(image_size=4, patch_size=2, n_classes=3, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=r"ViT: images must be \(B, 1, 4, 4\) or \(B, H, W\), got shape \(2, 1, 4, 5"):
        model.classify(np.zeros((2, 1, 4, 5)))
    with pytest.raises(TypeError, match="ViT: images must be a real array"):
        model.classify([[1.0]])
    with pytest.raises(ValueError, match=r"ViT: labels must have shape \(2,\)"):
        model.loss(np.zeros((2, 4, 4)), np.zeros(3, dtype=np.int64))
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()
    for bad, message in ((dict(patch_size=3), "patch_size=3 does not divide image_size=4"),
                         (dict(n_embd=6, n_head=4), "n_embd=6 is not divisible by n_head=4"),
                         (dict(pooling="max"), "pooling must be one of"),
                         (dict(in_channels=0), "in_channels must be a positive integer")):
        with pytest.raises(ValueError, match=message):
            ViTConfig(**{**dict(image_size=4, patch_size=2), **bad})
    cfg = ViTConfig(image_size=4, patch_size=2)
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------------------------
# learning: classes that only the arrangement of the patches tells apart
# ---------------------------------------------------------------------------------------------------------------
# 4x4 images, 2x2 patches on a 2x2 grid. Two of the four patches hold an object (template A plus noise), the other
# two only noise; the class says where the two objects are: in one row (0), in one column (1), or on a diagonal
# (2). At every position a patch holds an object with probability 1/2 in every class, so the per-patch contents
# (and the mean image) are the same in every class: only how the objects' positions relate tells the classes
# apart (the class token must find the objects by content, then read their positions).
TEMPLATE_A = np.array([[1.0, -1.0], [-1.0, 1.0]])
ARRANGEMENTS = {0: [(0, 1), (2, 3)], 1: [(0, 2), (1, 3)], 2: [(0, 3), (1, 2)]}  # grid cells holding objects


def arrangement_images(rng, n, noise=0.3):
    labels = rng.integers(0, 3, size=n)
    images = noise * rng.standard_normal((n, 1, 4, 4))
    for i, label in enumerate(labels):
        for cell in ARRANGEMENTS[int(label)][rng.integers(0, 2)]:
            r, c = divmod(cell, 2)
            images[i, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] += TEMPLATE_A
    return images, labels


def test_arrangement_task_has_the_same_patches_in_every_class():
    """The claim above, checked: per-class mean images agree (so no linear map of the pixels separates the
    classes), and every image holds two objects."""
    images, labels = arrangement_images(np.random.default_rng(0), 6000, noise=0.0)
    means = [images[labels == k].mean(axis=0) for k in range(3)]
    for k in (1, 2):
        np.testing.assert_allclose(means[k], means[0], atol=0.05)
    assert np.all((images[:, 0, ::2, ::2] == 1.0).sum(axis=(1, 2)) == 2)  # an object's top-left pixel is 1


def test_vit_learns_the_arrangement_of_patches():
    """A one-block ViT reaches >= 95% on fresh images after 300 steps (chance: 33%).

    The task is second order (which positions hold objects together), and from the 0.02 init the loss sits on a
    plateau at log 3 for many hundred steps; weight matrices ten times larger (std 0.2) leave it within a few
    dozen. Run on the default backend only: learning is the same maths on both, and the stand-in is slower."""
    cfg = ViTConfig(image_size=4, patch_size=2, n_classes=3, n_layer=1, n_head=2, n_embd=16, ffn_hidden=32, seed=1)
    model = ViT(cfg)
    for name, p in model.named_parameters():
        if p.data.ndim == 2 or name == "cls_token":
            p.data *= 10.0
    opt = AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        images, labels = arrangement_images(rng, 64)
        opt.zero_grad()
        model.loss(images.astype(np.float32), labels)
        model.backward()
        opt.step()
    images, labels = arrangement_images(np.random.default_rng(1), 600)
    model.eval()
    pred = backend.to_numpy(model.classify(images.astype(np.float32)).argmax(axis=-1))
    accuracy = float((pred == labels).mean())
    assert accuracy >= 0.95, accuracy


# ---------------------------------------------------------------------------------------------------------------
# PyTorch as the oracle: the same ViT written with torch ops (the patch embedding as a strided convolution)
# ---------------------------------------------------------------------------------------------------------------
def torch_vit_loss(torch, cfg, params, images, labels):
    """Pre-LN ViT in torch from npformer's parameters (torch tensors by npformer name; Linear weights (in, out))."""
    F = torch.nn.functional
    E, p, H = cfg.n_embd, cfg.patch_size, cfg.n_head
    B = images.shape[0]
    w_patch = params["patch.linear.weight"].T.reshape(E, cfg.in_channels, p, p)  # (P, E) -> a conv kernel
    e = F.conv2d(images, w_patch, params["patch.linear.bias"], stride=p).flatten(2).transpose(1, 2)  # (B, N, E)
    x = torch.cat([params["cls_token"].expand(B, 1, E), e], dim=1) + params["pos.weight"]
    T = x.shape[1]
    for i in range(cfg.n_layer):
        def P(name, i=i):
            return params[f"blocks.{i}.{name}"]

        h = F.layer_norm(x, (E,), P("norm1.weight"), P("norm1.bias"), eps=1e-5)
        q, k, v = (t.reshape(B, T, H, E // H).transpose(1, 2) for t in (h @ P("attn.qkv.weight") +
                                                                          P("attn.qkv.bias")).split(E, dim=2))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, E)  # no mask: bidirectional
        x = x + y @ P("attn.proj.weight") + P("attn.proj.bias")
        h = F.layer_norm(x, (E,), P("norm2.weight"), P("norm2.bias"), eps=1e-5)
        h = F.gelu(h @ P("ffn.fc.weight") + P("ffn.fc.bias"), approximate="tanh")
        x = x + h @ P("ffn.proj.weight") + P("ffn.proj.bias")
    x = F.layer_norm(x, (E,), params["norm_f.weight"], params["norm_f.bias"], eps=1e-5)
    logits = x[:, 0] @ params["head.weight"] + params["head.bias"]
    return F.cross_entropy(logits, labels), logits


@given(seed=seeds(), B=st.integers(1, 3), n_layer=st.integers(1, 2), patch=st.integers(1, 2),
       in_channels=st.integers(1, 2))
def test_vit_matches_torch(seed, B, n_layer, patch, in_channels):
    """Logits, loss, every parameter gradient and the images' gradient equal PyTorch's, in float64."""
    torch = pytest.importorskip("torch")
    cfg = ViTConfig(image_size=2 * patch, patch_size=patch, in_channels=in_channels, n_classes=3, n_layer=n_layer,
                    n_head=2, n_embd=8, ffn_hidden=6)
    model = float64_vit(cfg, seed)
    images = normal_array(seed, (B, in_channels, 2 * patch, 2 * patch))
    labels = np.random.default_rng(seed).integers(0, 3, size=B)
    loss = model.loss(images, labels)
    dimages = backend.to_numpy(model.backward())
    params = {name: torch.tensor(backend.to_numpy(p.data), requires_grad=True)
              for name, p in model.named_parameters()}
    t_images = torch.tensor(images, requires_grad=True)
    t_loss, t_logits = torch_vit_loss(torch, cfg, params, t_images, torch.from_numpy(labels))
    t_loss.backward()
    model.eval()
    np.testing.assert_allclose(backend.to_numpy(model.classify(images)), t_logits.detach().numpy(), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(backend.to_float(loss), t_loss.item(), rtol=1e-10)
    np.testing.assert_allclose(dimages, t_images.grad.numpy(), rtol=1e-8, atol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(backend.to_numpy(p.grad), params[name].grad.numpy(), rtol=1e-8, atol=1e-12,
                                   err_msg=name)
