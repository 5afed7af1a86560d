"""GPT weights from and to a Hugging Face model directory: ``config.json`` plus ``model.safetensors`` (or shards
listed in ``model.safetensors.index.json``), read and written with NumPy alone.

    model = GPT.from_pretrained("path/to/gpt2")                 # or npformer.models.pretrained.from_pretrained
    model.save_pretrained("path/to/copy")                        # transformers' from_pretrained reads it

The name mapping is one table (``weight_table``): each npformer parameter, the Hugging Face tensors it is made
of, and how. npformer's Linear stores w as (C_in, C_out), as GPT-2's Conv1D does and as torch's nn.Linear (out, in)
does not; and npformer fuses projections that Llama keeps apart:

    kind   npformer parameter             Hugging Face tensors
    same   w                              [w]                          (GPT-2's Conv1D weights, biases, norms)
    T      w (C_in, C_out)                [w.T]  (C_out, C_in)        (Llama's o_proj, down_proj; untied heads)
    cat_T  qkv (C, (H + 2 Hkv) D)         [q (H D, C), k (Hkv D, C), v (Hkv D, C)], transposed side by side
           fc (C, 2 F)                    [gate (F, C), up (F, C)]   (SwiGLU: npformer's fc is [gate | up])
    cat    qkv bias ((H + 2 Hkv) D,)      [q bias, k bias, v bias]
    experts_cat_T  w_fc (E, C, 2 F)       [w1, w3 of expert 0 (F, C each), w1, w3 of expert 1, ...]  (Mixtral:
                                          each expert's [gate | up], transposed, stacked)
    experts_T      w_proj (E, F, C)       [w2 of expert 0 (C, F), w2 of expert 1, ...], transposed, stacked

RoPE needs no permutation: transformers' Llama rotates with rotate_half (dimension i pairs with i + D/2), which is
npformer's half-split convention (npformer.functional.positions), and its checkpoints are stored for it.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import NamedTuple

import numpy as np

from .. import backend
from ..io.atomic import SHARED, atomic_open
from ..io.safetensors import load_safetensors, save_safetensors, tensor_dtypes
from .config import GPTConfig
from .hf_config import FLOAT_DTYPE_NAMES, gpt_config_from_hf, hf_config, hf_model_type

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_NAME = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
DTYPE_CODES = {name: code for code, name in FLOAT_DTYPE_NAMES.items()}  # "bfloat16" -> "BF16"
# buffers some checkpoints carry that are not parameters (GPT-2's causal mask, Llama's rotary frequencies)
IGNORED = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$")


class Entry(NamedTuple):
    ours: str  # npformer parameter name
    theirs: tuple  # Hugging Face tensor names
    kind: str  # "same", "T", "cat_T", "cat", "experts_cat_T" or "experts_T" (see the module docstring)


# ---------------------------------------------------------------------------------------------------------------
# the name mapping
# ---------------------------------------------------------------------------------------------------------------
def default_prefix(model_type: str) -> str:
    """The prefix transformers' *ForCausalLM / *LMHeadModel classes write before the body's tensor names."""
    return "transformer." if model_type == "gpt2" else "model."


def weight_table(config: GPTConfig, model_type: str, prefix: str | None = None) -> list[Entry]:
    """Every npformer parameter of a GPT with ``config``, and the Hugging Face tensors of ``model_type`` it is
    made of (their names start with ``prefix``, default ``default_prefix(model_type)``; the head's never does)."""
    p = default_prefix(model_type) if prefix is None else prefix
    table = []
    if model_type == "gpt2":
        table += [Entry("wte.weight", (p + "wte.weight",), "same"), Entry("wpe.weight", (p + "wpe.weight",), "same")]
        for i in range(config.n_layer):
            h = f"{p}h.{i}."
            for ours, theirs in (("norm1", "ln_1"), ("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                 ("norm2", "ln_2"), ("ffn.fc", "mlp.c_fc"), ("ffn.proj", "mlp.c_proj")):
                table += [Entry(f"blocks.{i}.{ours}.weight", (f"{h}{theirs}.weight",), "same"),
                          Entry(f"blocks.{i}.{ours}.bias", (f"{h}{theirs}.bias",), "same")]
        table += [Entry("norm_f.weight", (p + "ln_f.weight",), "same"),
                  Entry("norm_f.bias", (p + "ln_f.bias",), "same")]
    else:  # llama, mistral, mixtral
        table.append(Entry("wte.weight", (p + "embed_tokens.weight",), "same"))
        for i in range(config.n_layer):
            h, b = f"{p}layers.{i}.", f"blocks.{i}."
            qkv = tuple(f"{h}self_attn.{x}_proj" for x in "qkv")
            gate_up = (f"{h}mlp.gate_proj", f"{h}mlp.up_proj")
            table += [Entry(b + "norm1.weight", (h + "input_layernorm.weight",), "same"),
                      Entry(b + "attn.qkv.weight", tuple(n + ".weight" for n in qkv), "cat_T"),
                      Entry(b + "attn.proj.weight", (h + "self_attn.o_proj.weight",), "T"),
                      Entry(b + "norm2.weight", (h + "post_attention_layernorm.weight",), "same")]
            if model_type == "mixtral":
                moe = f"{h}block_sparse_moe."
                experts = range(config.n_experts)
                table += [Entry(b + "ffn.gate.weight", (moe + "gate.weight",), "T"),
                          Entry(b + "ffn.w_fc", tuple(f"{moe}experts.{e}.{w}.weight" for e in experts
                                                      for w in ("w1", "w3")), "experts_cat_T"),
                          Entry(b + "ffn.w_proj", tuple(f"{moe}experts.{e}.w2.weight" for e in experts), "experts_T")]
                continue
            table += [Entry(b + "ffn.fc.weight", tuple(n + ".weight" for n in gate_up), "cat_T"),
                      Entry(b + "ffn.proj.weight", (h + "mlp.down_proj.weight",), "T")]
            if config.bias:
                table += [Entry(b + "attn.qkv.bias", tuple(n + ".bias" for n in qkv), "cat"),
                          Entry(b + "attn.proj.bias", (h + "self_attn.o_proj.bias",), "same"),
                          Entry(b + "ffn.fc.bias", tuple(n + ".bias" for n in gate_up), "cat"),
                          Entry(b + "ffn.proj.bias", (h + "mlp.down_proj.bias",), "same")]
        table.append(Entry("norm_f.weight", (p + "norm.weight",), "same"))
    if not config.tie_embeddings:
        table.append(Entry("lm_head", ("lm_head.weight",), "T"))
    return table


def _split_sizes(entry: Entry, config: GPTConfig) -> list[int]:
    """The sizes along the fused axis of the Hugging Face tensors a cat / cat_T entry joins."""
    if ".attn.qkv." in entry.ours:
        H, Hkv, D = config.n_head, config.n_kv_head, config.head_dim
        return [H * D, Hkv * D, Hkv * D]
    return [config.ffn_hidden, config.ffn_hidden]  # SwiGLU's gate and up


def hf_to_npformer(tensors: dict, table: list[Entry], dtype=None) -> dict:
    """Hugging Face tensors ({name: array}, e.g. a safetensors file, or torch gradients as NumPy) -> npformer's
    state dict ({name: array}) through ``table``, in ``dtype`` (default: as they come)."""
    state = {}
    for e in table:
        parts = [tensors[name] for name in e.theirs]
        if e.kind == "same":
            value = parts[0]
        elif e.kind == "T":
            value = parts[0].T
        elif e.kind == "cat_T":
            value = np.concatenate([a.T for a in parts], axis=1)
        elif e.kind == "experts_cat_T":  # (w1, w3) per expert -> (E, C, 2F)
            value = np.stack([np.concatenate([w1.T, w3.T], axis=1) for w1, w3 in zip(parts[0::2], parts[1::2])])
        elif e.kind == "experts_T":
            value = np.stack([a.T for a in parts])
        else:
            value = np.concatenate(parts)
        state[e.ours] = np.ascontiguousarray(value, dtype=dtype)
    return state


def npformer_to_hf(state: dict, table: list[Entry], config: GPTConfig) -> dict:
    """npformer's state dict -> Hugging Face tensors, the inverse of ``hf_to_npformer`` (contiguous copies)."""
    out = {}
    for e in table:
        value = state[e.ours]
        if e.kind == "same":
            parts = [value]
        elif e.kind == "T":
            parts = [value.T]
        elif e.kind == "experts_cat_T":
            F = value.shape[2] // 2
            parts = [half.T for expert in value for half in (expert[:, :F], expert[:, F:])]
        elif e.kind == "experts_T":
            parts = [expert.T for expert in value]
        else:
            cuts = np.cumsum(_split_sizes(e, config))[:-1]
            pieces = np.split(value, cuts, axis=1 if e.kind == "cat_T" else 0)
            parts = [a.T for a in pieces] if e.kind == "cat_T" else pieces
        for name, part in zip(e.theirs, parts):
            out[name] = np.ascontiguousarray(part)
    return out


# ---------------------------------------------------------------------------------------------------------------
# reading a directory
# ---------------------------------------------------------------------------------------------------------------
def read_config(path) -> dict:
    """The parsed config.json of a model directory, with errors that name the file."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise (NotADirectoryError if os.path.exists(path) else FileNotFoundError)(
            f"from_pretrained: {path!r} is not a directory (give the directory holding config.json and "
            "model.safetensors)")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"from_pretrained: {path!r} has no config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"from_pretrained: {config_path!r} is not valid JSON ({exc})") from None


def weight_files(path) -> list[str]:
    """The safetensors files of a model directory: model.safetensors, or the shards its index lists."""
    path = os.fspath(path)
    single, index = os.path.join(path, SINGLE_FILE), os.path.join(path, INDEX_FILE)
    if os.path.isfile(single):
        return [single]
    if not os.path.isfile(index):
        others = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".h5")))
        hint = (f" (it has {', '.join(others)}: pickle-based formats, which npformer never loads; convert them to "
                "safetensors with transformers)" if others else "")
        raise FileNotFoundError(f"from_pretrained: {path!r} has neither {SINGLE_FILE} nor {INDEX_FILE}{hint}")
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"from_pretrained: {index!r} is not a safetensors index with a weight_map ({exc})") from None
    for shard in shards:
        if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ValueError(f"from_pretrained: {index!r} names shard {shard!r}, which is not a file in the directory")
    return [os.path.join(path, shard) for shard in shards]


def load_tensors(path) -> tuple[dict, str | None]:
    """All tensors of a model directory ({name: memory-mapped array}) and the float dtype most of them are stored
    in ("F32", "BF16", ...). With shards, each tensor must be in the shard the index says, and in one only."""
    files = weight_files(path)
    tensors, codes, seen_in = {}, Counter(), {}
    index = _index_map(path) if len(files) > 1 or os.path.basename(files[0]) != SINGLE_FILE else None
    for file in files:
        shard = os.path.basename(file)
        for name, array in load_safetensors(file).items():
            if name in tensors:
                raise ValueError(f"from_pretrained: tensor {name!r} is in both {seen_in[name]!r} and {shard!r}")
            if index is not None and index.get(name) != shard:
                raise ValueError(f"from_pretrained: tensor {name!r} is in {shard!r}, but {INDEX_FILE} puts it in "
                                 f"{index.get(name)!r}")
            tensors[name], seen_in[name] = array, shard
        codes.update(c for c in tensor_dtypes(file).values() if c in FLOAT_DTYPE_NAMES)
    if index is not None:
        missing = sorted(set(index) - set(tensors))
        if missing:
            raise ValueError(f"from_pretrained: {INDEX_FILE} lists {', '.join(missing[:5])}, which no shard holds")
    return tensors, (codes.most_common(1)[0][0] if codes else None)


def _index_map(path) -> dict:
    with open(os.path.join(os.fspath(path), INDEX_FILE), encoding="utf-8") as f:
        return json.load(f)["weight_map"]


def _prefix(tensors: dict, model_type: str) -> str:
    p = default_prefix(model_type)
    return p if any(name.startswith(p) for name in tensors) else ""


def state_from_tensors(tensors: dict, config: GPTConfig, model_type: str, prefix: str, dtype) -> dict:
    """npformer's state dict from a directory's tensors, after checking that every tensor the model needs is
    there with its shape and that nothing else is (but buffers that are not parameters)."""
    table = weight_table(config, model_type, prefix)
    needed = {name for e in table for name in e.theirs}
    missing = sorted(needed - set(tensors))
    if missing:
        raise ValueError(f"from_pretrained: the weights lack {', '.join(map(repr, missing[:5]))}"
                         f"{' and more' if len(missing) > 5 else ''} (a {model_type} model with this config.json "
                         "needs them)")
    tied_head = config.tie_embeddings and "lm_head.weight" in tensors  # a copy of the tied embedding, unread
    unexpected = sorted(n for n in set(tensors) - needed if not IGNORED.search(n) and not
                        (tied_head and n == "lm_head.weight"))
    if unexpected:
        raise ValueError(f"from_pretrained: the weights hold {', '.join(map(repr, unexpected[:5]))}, which a "
                         f"{model_type} model with this config.json does not have")
    tensors = dict(tensors)
    if config.positions == "learned":  # a block_size override crops the learned positions (nanoGPT's crop)
        wpe = prefix + "wpe.weight"
        tensors[wpe] = tensors[wpe][:config.block_size]
    return hf_to_npformer(tensors, table, dtype)


def from_pretrained(path, dtype="float32", **overrides):
    """A GPT on the active backend from a Hugging Face model directory (gpt2, llama, mistral or mixtral; see
    npformer.models.hf_config). dtype: "float32" or "float64" (BF16 and F16 weights are widened). overrides:
    block_size (crop the context), dropout (for fine-tuning), kernels, attn_impl, recompute, loss_chunk, seed."""
    from .gpt import GPT  # gpt.py's from_pretrained calls this module: import at call time

    dtype = np.dtype(dtype)
    if dtype.name not in ("float32", "float64"):
        raise ValueError(f"from_pretrained: dtype must be float32 or float64, got {dtype.name}")
    hf = read_config(path)
    tensors, file_dtype = load_tensors(path)
    model_type = hf.get("model_type")
    prefix = _prefix(tensors, model_type) if isinstance(model_type, str) else ""
    extra = {"prefix": prefix, "file_dtype": file_dtype}
    gen_path = os.path.join(os.fspath(path), "generation_config.json")
    if os.path.isfile(gen_path):
        try:
            with open(gen_path, encoding="utf-8") as f:
                extra["generation_config"] = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # what to generate by default is transformers' business; the model reads fine without it
    config = gpt_config_from_hf(hf, extra, **overrides)
    state = state_from_tensors(tensors, config, model_type, prefix, dtype)
    previous = backend.float_dtype()
    backend.set_float_dtype(dtype)
    try:
        model = GPT(config)
    finally:
        backend.set_float_dtype(previous)
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------------------------------------------
# writing a directory
# ---------------------------------------------------------------------------------------------------------------
def save_pretrained(model, path, dtype: str | None = None, max_shard_size: int | None = None) -> list[str]:
    """Write ``model`` (a GPT) as a Hugging Face model directory that transformers' from_pretrained reads:
    config.json, model.safetensors (or shards of at most ``max_shard_size`` bytes and their index), and the
    source's generation_config.json when the model came from one. Returns the files written.

    dtype: "float32", "bfloat16", "float16" or "float64"; None: the dtype of the files the model was read from
    (so a directory round-trips unchanged), else float32.
    """
    config = model.config
    model_type = hf_model_type(config)
    hf_extra = config.extra.get("hf", {}) if isinstance(config.extra, dict) else {}
    hf_extra = hf_extra if isinstance(hf_extra, dict) else {}
    if dtype is None:
        code = hf_extra.get("file_dtype") if hf_extra.get("file_dtype") in FLOAT_DTYPE_NAMES else "F32"
    elif dtype in DTYPE_CODES:
        code = DTYPE_CODES[dtype]
    else:
        raise ValueError(f"save_pretrained: dtype must be one of {sorted(DTYPE_CODES)} or None, got {dtype!r}")
    prefix = hf_extra.get("prefix") if isinstance(hf_extra.get("prefix"), str) else None
    tensors = npformer_to_hf(model.state_dict(), weight_table(config, model_type, prefix), config)
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    written = _write_weights(path, tensors, code, max_shard_size)
    _write_json(os.path.join(path, "config.json"), hf_config(config, FLOAT_DTYPE_NAMES[code]))
    written.append("config.json")
    if isinstance(hf_extra.get("generation_config"), dict):
        _write_json(os.path.join(path, "generation_config.json"), hf_extra["generation_config"])
        written.append("generation_config.json")
    return written


def _write_json(path: str, doc: dict) -> None:
    with atomic_open(path, "w", encoding="utf-8", permissions=SHARED) as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")  # transformers' own layout


def _write_weights(path: str, tensors: dict, code: str, max_shard_size: int | None) -> list[str]:
    itemsize = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}[code]
    sizes = {n: a.size * (itemsize if a.dtype.kind == "f" else a.itemsize) for n, a in tensors.items()}
    shards, current, used = [], {}, 0
    for name in sorted(tensors):
        if current and max_shard_size is not None and used + sizes[name] > max_shard_size:
            shards.append(current)
            current, used = {}, 0
        current[name] = tensors[name]
        used += sizes[name]
    shards.append(current)
    names = [SINGLE_FILE] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_safetensors(os.path.join(path, name), shard, metadata={"format": "pt"}, dtype=code)
    written = list(names)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())},
                 "weight_map": {t: name for name, shard in zip(names, shards) for t in shard}}
        _write_json(os.path.join(path, INDEX_FILE), index)
        written.append(INDEX_FILE)
    for stale in os.listdir(path):  # weights of an earlier save in the other layout would shadow or confuse these
        if (stale == SINGLE_FILE or stale == INDEX_FILE or SHARD_NAME.match(stale)) and stale not in written:
            os.unlink(os.path.join(path, stale))
    return written
