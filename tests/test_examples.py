"""The example scripts run end to end (tiny settings): train_char trains, checkpoints, resumes and samples."""

import importlib.util
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "1", "--eval-interval", "2", "--warmup-iters", "1", "--log-interval", "1",
        "--samples", "1", "--sample-tokens", "20"]


def test_train_char_trains_checkpoints_resumes_and_samples(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 50, encoding="utf-8")
    train_char = _load("train_char")
    out = str(tmp_path / "run")
    assert train_char.main(["--data", str(corpus), "--max-iters", "3", "--out-dir", out, *TINY]) == 0
    text = capsys.readouterr().out
    assert "vocabulary 16" in text and "val loss" in text and "---- sample 1 ----" in text
    assert os.path.exists(os.path.join(out, "ckpt.npz")) and os.path.exists(os.path.join(out, "history.csv"))
    assert train_char.main(["--data", str(corpus), "--max-iters", "5", "--out-dir", out, "--resume", *TINY]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_train_char_default_corpus_and_llama_preset(tmp_path, capsys):
    train_char = _load("train_char")
    argv = ["--max-iters", "2", "--out-dir", str(tmp_path), "--preset", "llama-style", *TINY]
    assert train_char.main(argv) == 0
    text = capsys.readouterr().out
    assert "Python standard-library source" in text


def test_train_char_refuses_unknown_flags():
    train_char = _load("train_char")
    with pytest.raises(SystemExit):
        train_char.main(["--n-layers", "3"])
