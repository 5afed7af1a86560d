"""Checkpoints round-trip, refuse hostile or broken files without running their code, and are written atomically."""

import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npformer import backend
from npformer.data import BatchSampler, CharTokenizer
from npformer.nn import Module, Parameter
from npformer.train import checkpoint
from npformer.train.checkpoint import CheckpointError, check_state_against, load_checkpoint, save_checkpoint
from npformer.train.optim import AdamW, param_groups

from ..strategies import floats_array, shapes


class Tiny(Module):
    def __init__(self, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.w = Parameter(backend.asarray(rng.standard_normal((4, 3)).astype(dtype)))
        self.b = Parameter(backend.asarray(rng.standard_normal((3,)).astype(dtype)))


def test_round_trip_model_optimizer_meta(tmp_path, xp_backend):
    model = Tiny(0)
    opt = AdamW(param_groups(model, 0.1), lr=1e-3)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    tok = CharTokenizer.from_text("hello world")
    sampler = BatchSampler(np.arange(100), 4, 2, seed=3)
    sampler.next()
    meta = {"config": {"n_layer": 2}, "tokenizer": tok.to_dict(), "step": np.int64(1), "loss": np.float32(2.5),
            "sampler": sampler.state_dict()}
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params=model.state_dict(), meta=meta, optimizer=opt.state_dict())

    ckpt = load_checkpoint(path)
    assert ckpt.meta["step"] == 1 and ckpt.meta["loss"] == 2.5 and ckpt.meta["config"] == {"n_layer": 2}
    assert ckpt.meta["sampler"] == json.loads(json.dumps(sampler.state_dict()))
    for name, arr in model.state_dict().items():
        assert ckpt.params[name].dtype == arr.dtype
        np.testing.assert_array_equal(ckpt.params[name], arr)
    original = opt.state_dict()
    assert set(ckpt.optimizer) == set(original)
    for key, value in original.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(ckpt.optimizer[key], value)
            assert ckpt.optimizer[key].dtype == value.dtype
        else:
            assert ckpt.optimizer[key] == json.loads(json.dumps(value))

    # everything loads back into fresh objects
    model2 = Tiny(1)
    model2.load_state_dict(ckpt.params)
    opt2 = AdamW(param_groups(model2, 0.1), lr=5.0)
    opt2.load_state_dict(ckpt.optimizer)
    assert opt2.step_count == 1 and opt2.lr == 1e-3
    sampler2 = BatchSampler(np.arange(100), 4, 2, seed=0)
    sampler2.load_state_dict(ckpt.meta["sampler"])
    np.testing.assert_array_equal(backend.to_numpy(sampler2.next()[0]), backend.to_numpy(sampler.next()[0]))
    assert CharTokenizer.from_dict(ckpt.meta["tokenizer"]).chars == tok.chars
    # and it is a plain npz
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(["meta.json", "param/w", "param/b"] +
                                           [f"optim/{k}" for k, v in original.items() if isinstance(v, np.ndarray)])


@given(data=st.data(), n=st.integers(0, 4), dtype=st.sampled_from([np.float32, np.float64]))
def test_round_trip_arbitrary_arrays(tmp_path, data, n, dtype):
    params = {f"layer.{i}.w": data.draw(floats_array(data.draw(shapes(0, 3)), dtype)) for i in range(n)}
    path = tmp_path / "x.npz"
    save_checkpoint(path, params=params, meta={"n": n})
    ckpt = load_checkpoint(path)
    assert ckpt.optimizer is None and ckpt.meta == {"n": n}
    assert set(ckpt.params) == set(params)
    for k, v in params.items():
        assert ckpt.params[k].dtype == v.dtype and ckpt.params[k].shape == v.shape
        np.testing.assert_array_equal(ckpt.params[k], v)


# ---------------------------------------------------------------------------------------------------------------
# hostile and broken files
# ---------------------------------------------------------------------------------------------------------------
def _make_marker(path):
    with open(path, "w") as f:
        f.write("pwned")
    return 0


class Evil:
    """Unpickling this object calls _make_marker: code execution, if a loader ever unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_make_marker, (str(self.marker),))


def _meta_entry(doc=None):
    doc = doc or {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION, "meta": {},
                  "optimizer": None}
    return np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = Evil(marker)
    np.savez(path, **{"meta.json": _meta_entry(), "param/w": evil})  # np.savez pickles object arrays
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)
    assert not marker.exists()
    # the payload is live: a loader that allows pickle would have run it (so the test above can fail)
    check_marker = tmp_path / "check"
    evil[0] = Evil(check_marker)
    np.savez(tmp_path / "evil2.npz", **{"meta.json": _meta_entry(), "param/w": evil})
    with np.load(tmp_path / "evil2.npz", allow_pickle=True) as npz:
        npz["param/w"]
    assert check_marker.exists()


def test_truncated_file(tmp_path):
    path = tmp_path / "ok.npz"
    save_checkpoint(path, params={"w": np.ones((50, 50), np.float32)}, meta={})
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            load_checkpoint(bad)


def test_corrupt_member_data(tmp_path):
    path = tmp_path / "ok.npz"
    save_checkpoint(path, params={"w": np.arange(4000, dtype=np.float64)}, meta={})
    raw = bytearray(path.read_bytes())
    raw[2000] ^= 0xFF  # flip bits inside the array data: the zip's CRC check catches it
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_missing_and_not_npz(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.npz")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a .npz"):
        load_checkpoint(text)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(CheckpointError, match="not a .npz"):
        load_checkpoint(npy)


@pytest.mark.parametrize("entries, match", [
    ({"param/w": np.zeros(2)}, "no meta.json"),
    ({"meta.json": np.frombuffer(b"{not json", dtype=np.uint8)}, "not valid UTF-8 JSON"),
    ({"meta.json": np.zeros(3, dtype=np.float32)}, "uint8"),
    ({"meta.json": _meta_entry({"format": "npformer-checkpoint", "format_version": 99, "meta": {}})},
     "format version 99"),
    ({"meta.json": _meta_entry({"something": "else"})}, "not describe an npformer checkpoint"),
    ({"meta.json": _meta_entry(), "param/w": np.array(["a", "b"])}, "non-numeric dtype"),
    ({"meta.json": _meta_entry(), "weights": np.zeros(2)}, "unknown entry 'weights'"),
    ({"meta.json": _meta_entry(), "optim/exp_avg/w": np.zeros(2)}, "no optimizer scalars"),
])
def test_bad_contents(tmp_path, entries, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **entries)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_save_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="only numeric"):
        save_checkpoint(path, params={"w": np.array([object()], dtype=object)}, meta={})
    with pytest.raises(TypeError, match="not a NumPy array"):
        save_checkpoint(path, params={"w": [1.0, 2.0]}, meta={})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, params={}, meta={"f": object()})
    assert not path.exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["savez", "replace"])
def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch, where):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params={"w": np.ones(3)}, meta={"step": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        if where == "savez":  # fail halfway: some bytes already written to the temporary file
            args[0].write(b"PK\x03\x04 partial")
        raise OSError("disk on fire")

    monkeypatch.setattr(np, "savez", boom) if where == "savez" else monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_checkpoint(path, params={"w": np.zeros(3)}, meta={"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left behind
    assert load_checkpoint(path).meta == {"step": 1}


def test_save_overwrites_and_leaves_only_the_file(tmp_path):
    path = tmp_path / "ckpt"  # any name: no ".npz" is appended
    for step in range(3):
        save_checkpoint(str(path), params={"w": np.full(2, step, np.float32)}, meta={"step": step})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert zipfile.is_zipfile(path)
    ckpt = load_checkpoint(path)
    assert ckpt.meta["step"] == 2 and ckpt.params["w"].tolist() == [2.0, 2.0]


# ---------------------------------------------------------------------------------------------------------------
# checking a state
# ---------------------------------------------------------------------------------------------------------------
def test_check_state_against_lists_everything():
    expected = {"a": ((2, 3), np.float32), "b": ((3,), np.float32), "c": ((1,), np.float64)}
    state = {"a": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float64), "d": np.zeros(1)}
    check_state_against({"x": ((2,), np.float32)}, {"x": np.zeros(2, np.float32)})  # fits: no error
    with pytest.raises(CheckpointError) as info:
        check_state_against(expected, state, where="model")
    msg = str(info.value)
    for fragment in ("model", "missing: c", "unexpected: d", "a: shape (3, 2)", "b: dtype float64"):
        assert fragment in msg
