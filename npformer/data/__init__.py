"""Data: tokenizers, the train/validation split and batch sampling, corpora, and toy tasks for the examples."""

from .batches import BatchSampler, train_val_split
from .bpe import BPETokenizer
from .corpora import stdlib_corpus
from .text_files import check_long_enough, read_corpus, read_text
from .tokenizers import ByteTokenizer, CharTokenizer, tokenizer_from_dict

__all__ = ["BPETokenizer", "BatchSampler", "ByteTokenizer", "CharTokenizer", "check_long_enough", "read_corpus",
           "read_text", "stdlib_corpus", "tokenizer_from_dict", "train_val_split"]
