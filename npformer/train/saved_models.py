"""A GPT, its tokenizer and its checkpoint from a file that ``Trainer`` (``examples/train_char.py``) wrote, with
every entry checked before anything is built: a config that is not a mapping, an unknown or missing field, a
value of the wrong type, a tokenizer that does not describe one, or parameters that do not fit the config are
each a CheckpointError naming the file and the entry."""

from __future__ import annotations

from ..data import tokenizer_from_dict
from ..models import GPT, GPTConfig
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint


def load_gpt(path: str):
    """path -> (GPT on the active backend, tokenizer, Checkpoint)."""
    ckpt: Checkpoint = load_checkpoint(path)
    for key in ("config", "tokenizer"):
        if key not in ckpt.meta:
            raise CheckpointError(f"{path!r}: the checkpoint has no {key!r} entry (was it written by "
                                  "examples/train_char.py?)")
    try:
        config = GPTConfig.from_dict(ckpt.meta["config"], where=f"{path!r}: config")
    except CheckpointError:
        raise
    except (ValueError, TypeError) as exc:
        raise CheckpointError(str(exc)) from None
    try:
        tokenizer = tokenizer_from_dict(ckpt.meta["tokenizer"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path!r}: tokenizer: {exc}") from None
    # a model may have more rows than its tokenizer has tokens (vocabularies padded to a round size), not fewer
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path!r}: the tokenizer has {tokenizer.vocab_size} tokens but the config's "
                              f"vocab_size is {config.vocab_size}")
    model = GPT(config)
    try:
        model.load_state_dict(ckpt.params)
    except ValueError as exc:
        raise CheckpointError(f"{path!r}: parameters: {exc}") from None
    return model, tokenizer, ckpt
