"""Seeded learning runs (float32, NumPy): the example scripts, on smaller models and tasks, must reach the
accuracies they promise. Each run takes a few seconds on 2 CPU cores.

    encoder-decoder, reversing 1-6 digits:   >= 99% exact match on 300 held-out examples (greedy and beam 4)
    the same with the paper's choices (post-LN, sinusoidal positions, ReLU, label smoothing 0.1, shared
    embeddings scaled by sqrt(C), inverse-square-root schedule):   >= 99% exact match
    encoder classifier, balanced brackets of length 2-12:   >= 98% accuracy on 1000 held-out examples
"""

import importlib.util
import os
import sys

import pytest

from npformer import backend

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")


def _example(name):
    """Import examples/<name>.py as a module (registered first: its dataclasses look themselves up there)."""
    key = f"_npformer_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(EXAMPLES, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


SMALL_SEQ2SEQ = ["--backend", "numpy", "--max-len", "6", "--n-embd", "48", "--ffn-hidden", "96", "--n-eval", "300",
                 "--eval-every", "100000", "--n-show", "0", "--seed", "0"]


@pytest.mark.parametrize("beam", [1, 4])
def test_seq2seq_learns_to_reverse(beam):
    assert backend.float_dtype() == "float32"
    result = _example("train_seq2seq").main(SMALL_SEQ2SEQ + ["--steps", "400", "--beam-width", str(beam),
                                                             "--length-penalty", "0.6"])
    assert result["exact_match"] >= 0.99, result["exact_match"]


def test_seq2seq_with_the_papers_choices_learns_to_reverse():
    result = _example("train_seq2seq").main(SMALL_SEQ2SEQ + [
        "--steps", "700", "--norm-placement", "post", "--positions", "sinusoidal", "--ffn-kind", "relu",
        "--label-smoothing", "0.1", "--share-embeddings", "--scale-embeddings", "--schedule", "inverse_sqrt",
        "--learning-rate", "1e-3", "--warmup-steps", "100"])
    assert result["config"]["norm_placement"] == "post" and result["config"]["share_embeddings"]
    assert result["exact_match"] >= 0.99, result["exact_match"]


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_encoder_learns_balanced_brackets(pooling):
    result = _example("train_classifier").main([
        "--backend", "numpy", "--max-len", "12", "--n-embd", "32", "--ffn-hidden", "64", "--steps", "600",
        "--n-eval", "1000", "--eval-every", "100000", "--n-show", "0", "--pooling", pooling, "--seed", "0"])
    assert result["accuracy"] >= 0.98, result["accuracy"]
