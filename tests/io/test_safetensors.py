"""safetensors with NumPy alone: every dtype NumPy holds round-trips; files agree with the safetensors package and
torch both ways (when installed); every way a file can lie is a SafetensorsError that names it, and nothing in a
file is ever executed."""

import json
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from npformer.io import SafetensorsError, load_safetensors, save_safetensors
from npformer.io.safetensors import bfloat16_to_float32, float32_to_bfloat16

DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32",
          "float64"]


def _tensors():
    arrays = st.sampled_from(DTYPES).flatmap(lambda d: hnp.arrays(
        np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
    return st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda n: n != "__metadata__"), arrays,
                           max_size=5)


@settings(max_examples=30)
@given(tensors=_tensors(), metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_every_numpy_dtype_round_trips(tmp_path_factory, tensors, metadata):
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    save_safetensors(path, tensors, metadata=metadata)
    back, meta = load_safetensors(path, with_metadata=True)
    assert meta == metadata
    assert sorted(back) == sorted(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        np.testing.assert_array_equal(back[name], a)  # NaNs compare equal here, bit patterns aside
        assert not back[name].flags.writeable  # a view of the memory-mapped file


def test_reads_are_memory_mapped_views(tmp_path):
    path = tmp_path / "big.safetensors"
    save_safetensors(path, {"w": np.arange(1 << 16, dtype=np.float32)})
    w = load_safetensors(path)["w"]
    assert w.base is not None and not w.flags.owndata and w[12345] == 12345.0


def test_bfloat16_rounds_to_nearest_even():
    # exact halves between two bfloat16 values go to the even one; infinities, zeros and NaN survive
    x = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -(1.0 + 2 ** -8), 1.0 + 2 ** -8 + 2 ** -20, 0.0, -0.0, np.inf,
                  -np.inf, np.nan, 3.0e38, 1e-40], dtype=np.float32)
    bits = float32_to_bfloat16(x)
    back = bfloat16_to_float32(bits)
    np.testing.assert_array_equal(back[:4], [1.0, 1.0 + 2 ** -6, -1.0, 1.0 + 2 ** -7])
    assert np.signbit(back[5]) and back[6] == np.inf and back[7] == -np.inf and np.isnan(back[8])
    rel = np.abs(back[9] - x[9]) / x[9]
    assert rel <= 2 ** -8


def test_bfloat16_matches_torch():
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(0).standard_normal(10_000) * 10.0 ** np.random.default_rng(1).integers(-30, 30,
                                                                                                      10_000))
    x = x.astype(np.float32)
    ours = float32_to_bfloat16(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)


def test_files_agree_with_the_safetensors_package(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
               "c": rng.standard_normal(5).astype(np.float16), "empty": np.zeros((0, 2), np.float64)}
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, tensors, metadata={"format": "pt"})
    for name, a in st_numpy.load_file(str(ours)).items():
        np.testing.assert_array_equal(a, tensors[name])
    theirs = tmp_path / "theirs.safetensors"
    st_numpy.save_file(tensors, str(theirs), metadata={"format": "np"})
    back, meta = load_safetensors(theirs, with_metadata=True)
    assert meta == {"format": "np"}
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype
        np.testing.assert_array_equal(back[name], a)


def test_bf16_and_f16_files_from_torch_are_widened(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    t = {"bf": torch.randn(4, 5).to(torch.bfloat16), "h": torch.randn(3).half()}
    path = tmp_path / "t.safetensors"
    st_torch.save_file(t, str(path))
    back = load_safetensors(path)
    assert back["bf"].dtype == np.float32 and back["h"].dtype == np.float16
    np.testing.assert_array_equal(back["bf"], t["bf"].float().numpy())
    np.testing.assert_array_equal(back["h"], t["h"].numpy())
    # and back: a BF16 file written here is read by torch bit for bit
    out = tmp_path / "out.safetensors"
    save_safetensors(out, back, dtype="BF16")
    again = st_torch.load_file(str(out))
    assert again["bf"].dtype == torch.bfloat16 and torch.equal(again["bf"], t["bf"])
    assert again["h"].dtype == torch.bfloat16


# -- files that lie ------------------------------------------------------------------------------------------------
def _file(tmp_path, header, buffer=b"", raw_header=None, length=None, raw=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw if raw is not None else
                     struct.pack("<Q", len(text) if length is None else length) + text + buffer)
    return path


def _f32(begin, end, shape):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


BAD_FILES = {
    "shorter than 8 bytes": (dict(raw=b"\x10\x00\x00"), "truncated: 3 bytes, shorter than the 8-byte"),
    "header longer than file": (dict(header={}, length=1000), "truncated: the header claims 1,000 bytes"),
    "absurd header size": (dict(header={}, length=2 ** 62), "more than the 100,000,000"),
    "not JSON": (dict(raw_header=b"{not json"), "not valid UTF-8 JSON"),
    "not an object": (dict(header=[1, 2]), "must be a JSON object"),
    "duplicate names": (dict(raw_header=b'{"a": 1, "a": 2}'), "appear more than once"),
    "unknown dtype": (dict(header={"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, buffer=bytes(4)),
                      "unknown dtype 'Q7'"),
    "float8": (dict(header={"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, buffer=bytes(4)),
               "F8_E4M3, which NumPy cannot hold"),
    "size does not match shape": (dict(header={"a": _f32(0, 8, [3])}, buffer=bytes(8)),
                                  r"shape \(3,\) of F32 needs 12 bytes but its data_offsets \[0, 8\] span 8"),
    "offsets past the end": (dict(header={"a": _f32(0, 16, [4])}, buffer=bytes(8)),
                             "truncated: tensor 'a' ends at byte 16 of the buffer, which has only 8"),
    "overlap": (dict(header={"a": _f32(0, 8, [2]), "b": _f32(4, 12, [2])}, buffer=bytes(12)),
                "tensors 'a' and 'b' overlap"),
    "hole": (dict(header={"a": _f32(0, 4, [1]), "b": _f32(8, 12, [1])}, buffer=bytes(12)),
             "bytes 4..8 of the buffer belong to no tensor"),
    "trailing bytes": (dict(header={"a": _f32(0, 4, [1])}, buffer=bytes(12)), "8 bytes after the last tensor"),
    "reversed offsets": (dict(header={"a": _f32(8, 4, [1])}, buffer=bytes(8)), "data_offsets must be"),
    "negative shape": (dict(header={"a": _f32(0, 4, [-1])}, buffer=bytes(4)), "shape must be a list"),
    "extra keys": (dict(header={"a": {**_f32(0, 4, [1]), "code": "rm -rf"}}, buffer=bytes(4)),
                   r"expected \{dtype, shape, data_offsets\}"),
    "metadata not strings": (dict(header={"__metadata__": {"a": 1}}), "__metadata__ must map strings"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_file_that_lies_is_a_clear_error(tmp_path, case):
    kwargs, message = BAD_FILES[case]
    path = _file(tmp_path, **{"header": None, **kwargs})
    with pytest.raises(SafetensorsError, match=message):
        load_safetensors(path)


class _Payload:
    """Unpickling this would create a file: the proof that something was executed."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_is_refused_without_being_run(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Payload(str(target))))  # what a malicious "model file" would hold
    with pytest.raises(SafetensorsError):
        load_safetensors(path)
    assert not target.exists()


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(SafetensorsError, match="not a file"):
        load_safetensors(tmp_path)


def test_save_refuses_what_it_cannot_store_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_safetensors(path, {"a": np.ones(3, np.float32)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="'b' is a list, not a NumPy array"):
        save_safetensors(path, {"a": np.ones(3, np.float32), "b": [1, 2]})
    with pytest.raises(TypeError, match="'c' has dtype complex128"):
        save_safetensors(path, {"c": np.ones(2, complex)})
    with pytest.raises(TypeError, match="metadata must be a dict of strings"):
        save_safetensors(path, {}, metadata={"format": 1})
    with pytest.raises(ValueError, match="dtype must be None or one of"):
        save_safetensors(path, {}, dtype="F8_E4M3")
    assert path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f != "t.safetensors"] == []  # no temporary file left behind


def test_header_is_padded_and_big_endian_input_is_stored_little_endian(tmp_path):
    path = tmp_path / "t.safetensors"
    save_safetensors(path, {"x": np.arange(3, dtype=">i4"), "y": np.ones(1, "u1")})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    np.testing.assert_array_equal(load_safetensors(path)["x"], [0, 1, 2])
    assert raw[8 + n:8 + n + 12] == np.arange(3, dtype="<i4").tobytes()
