"""Decoding: sampling from a GPT with a key/value cache, and greedy and beam search for encoder-decoders."""

from .beam import beam_search, greedy_decode
from .generate import generate
from .kv_cache import KVCache, RollingKVCache, make_kv_caches

__all__ = ["KVCache", "RollingKVCache", "beam_search", "generate", "greedy_decode", "make_kv_caches"]
