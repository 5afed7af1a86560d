"""Hugging Face's tokenizer files for a byte-level BPE: read into BPETokenizer's arguments, and written back.

Read, in this order of preference:
    tokenizer.json           the whole tokenizer: model (BPE vocab and merges), added tokens, pre-tokenizer
    vocab.json + merges.txt  GPT-2's original pair, with the added tokens of tokenizer_config.json (or GPT-2's
                             <|endoftext|> when the vocabulary has it)
What byte-level BPE cannot be (a normalizer, a prefix space, byte fallback, word suffixes, added tokens that eat
the spaces around them) is a ValueError naming the setting, never a silently different tokenisation.
"""

from __future__ import annotations

import json
import os

from ..io.atomic import SHARED, atomic_open
from .bpe import _merge_pair

GPT2_EOT = "<|endoftext|>"
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _load_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"BPETokenizer: {path!r} is not valid JSON ({exc})") from None


def _refuse(path: str, setting: str, value) -> ValueError:
    return ValueError(f"BPETokenizer: {path!r}: {setting} = {json.dumps(value)[:80]} is not supported (npformer reads "
                      "GPT-2-style byte-level BPE only)")


def read_tokenizer_files(path) -> dict:
    """BPETokenizer(**...) arguments from a directory (or a tokenizer.json file)."""
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".json"):
        return _from_tokenizer_json(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"BPETokenizer: {path!r} is not a directory")
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
        return _from_tokenizer_json(os.path.join(path, "tokenizer.json"))
    vocab_path, merges_path = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    if not (os.path.isfile(vocab_path) and os.path.isfile(merges_path)):
        raise FileNotFoundError(f"BPETokenizer: {path!r} has neither tokenizer.json nor vocab.json + merges.txt")
    vocab = _load_json(vocab_path, "vocab.json")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"BPETokenizer: {vocab_path!r} must map tokens to integer ids")
    with open(merges_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [_merge_pair(line) for line in lines if line and not line.startswith("#version")]
    config_path = os.path.join(path, "tokenizer_config.json")
    config = _load_json(config_path, "tokenizer_config.json") if os.path.isfile(config_path) else {}
    if not isinstance(config, dict):
        raise ValueError(f"BPETokenizer: {config_path!r} must hold a JSON object")
    if config.get("add_prefix_space"):
        raise _refuse(config_path, "add_prefix_space", True)
    added = []
    for i, t in (config.get("added_tokens_decoder") or {}).items():
        _check_added(config_path, t)
        added.append(dict(content=t["content"], id=int(i), special=bool(t.get("special", True))))
    names = [config.get(k) for k in SPECIAL_KEYS] + [GPT2_EOT]
    for name in names:  # special tokens named in the config (GPT-2: <|endoftext|>) are matched whole, as HF does
        name = name.get("content") if isinstance(name, dict) else name
        if isinstance(name, str) and name in vocab and all(a["content"] != name for a in added):
            added.append(dict(content=name, id=vocab[name], special=True))
    return dict(vocab=vocab, merges=merges, added_tokens=added, pattern=None, ignore_merges=False)


def _check_added(where: str, t) -> None:
    if not isinstance(t, dict) or not isinstance(t.get("content"), str):
        raise ValueError(f"BPETokenizer: {where!r}: an added token must have a string 'content', got {t!r:.80}")
    for flag in ("lstrip", "rstrip", "single_word"):
        if t.get(flag):
            raise _refuse(where, f"added token {t['content']!r} {flag}", True)


def _pre_tokenizer_pattern(where: str, pre) -> str | None:
    """None for GPT-2's ByteLevel pre-tokenizer; the regular expression of a Split + ByteLevel sequence."""
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise _refuse(where, "pre_tokenizer.add_prefix_space", True)
        if not pre.get("use_regex", True):
            raise _refuse(where, "pre_tokenizer.use_regex", False)
        return None
    if isinstance(pre, dict) and pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, byte_level = pre["pretokenizers"]
        if split.get("type") == "Split" and isinstance(split.get("pattern"), dict) and "Regex" in split["pattern"] \
                and split.get("behavior") == "Isolated" and not split.get("invert") \
                and byte_level.get("type") == "ByteLevel" and not byte_level.get("use_regex", True) \
                and not byte_level.get("add_prefix_space"):
            return split["pattern"]["Regex"]
    raise _refuse(where, "pre_tokenizer", pre)


def _from_tokenizer_json(path: str) -> dict:
    doc = _load_json(path, "tokenizer.json")
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise _refuse(path, "model.type", model.get("type") if isinstance(model, dict) else model)
    for key, neutral in (("dropout", (None, 0, 0.0)), ("continuing_subword_prefix", (None, "")),
                         ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False))):
        if model.get(key) not in neutral:
            raise _refuse(path, f"model.{key}", model[key])
    normalizer = doc.get("normalizer")
    if normalizer is not None and not (normalizer.get("type") == "Sequence" and not normalizer.get("normalizers")):
        raise _refuse(path, "normalizer", normalizer)
    pattern = _pre_tokenizer_pattern(path, doc.get("pre_tokenizer"))
    added = []
    for t in doc.get("added_tokens") or []:
        _check_added(path, t)
        added.append(dict(content=t["content"], id=int(t["id"]), special=bool(t.get("special", True))))
    merges = [_merge_pair(m) for m in model.get("merges") or []]
    return dict(vocab=model.get("vocab") or {}, merges=merges, added_tokens=added, pattern=pattern,
                ignore_merges=bool(model.get("ignore_merges", False)))


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------
def _write(path: str, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", permissions=SHARED) as f:
        f.write(text)


def write_tokenizer_files(tok, path: str) -> list[str]:
    """vocab.json, merges.txt, tokenizer.json and tokenizer_config.json for ``tok`` (a BPETokenizer) in ``path``."""
    os.makedirs(path, exist_ok=True)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if tok.pattern is None:
        pre = byte_level
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            {**byte_level, "use_regex": False}]}
    added = [{"id": t["id"], "content": t["content"], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t["special"]} for t in tok.added_tokens]
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": pre, "post_processor": {**byte_level, "trim_offsets": False},
           "decoder": byte_level,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                     "ignore_merges": tok.ignore_merges, "vocab": tok.vocab,
                     "merges": [list(m) for m in tok.merges]}}
    eot = GPT2_EOT if tok.token_id(GPT2_EOT) is not None else None
    config = {"tokenizer_class": "GPT2Tokenizer" if tok.pattern is None else "PreTrainedTokenizerFast",
              "add_prefix_space": False, "bos_token": eot, "eos_token": eot, "unk_token": eot,
              "added_tokens_decoder": {str(t["id"]): {k: v for k, v in a.items() if k != "id"}
                                       for t, a in zip(tok.added_tokens, added)}}
    files = {"tokenizer.json": json.dumps(doc, ensure_ascii=False),
             "vocab.json": json.dumps(tok.vocab, ensure_ascii=False),
             "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tok.merges),
             "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n"}
    for name, text in files.items():
        _write(os.path.join(path, name), text)
    return list(files)
