"""The example scripts run end to end (tiny settings): train_char trains, checkpoints, resumes and samples;
sample.py prints samples from a checkpoint. (The learning runs of the other examples are in tests/train.)"""

import importlib.util
import os

import pytest

from npformer.data import CharTokenizer
from npformer.models import GPT, GPTConfig
from npformer.train.checkpoint import save_checkpoint
from npformer.train.cli import run_script

from .helpers import randomize_parameters

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


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


# -- examples/sample.py ------------------------------------------------------------------------------------------
def _write_checkpoint(tmp_path, positions="learned"):
    tok = CharTokenizer.from_text("hello world\n")
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=6, n_layer=1, n_head=2, n_embd=8, positions=positions)
    model = randomize_parameters(GPT(cfg), 0)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params=model.state_dict(), meta={"config": cfg.to_dict(), "tokenizer": tok.to_dict(),
                                                           "step": 7})
    return str(path)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_sample_script_prints_samples(tmp_path, capsys, positions):
    sample = _load("sample")
    path = _write_checkpoint(tmp_path, positions)
    argv = ["--checkpoint", path, "--prompt", "he", "--max-new-tokens", "9", "--temperature", "0"]
    assert sample.main(argv + ["--num-samples", "2"]) == 0
    cached = capsys.readouterr().out
    assert "(step 7)" in cached and "---- sample 2 ----" in cached and "18 tokens in" in cached
    texts = [chunk.split("\n---- ")[0] for chunk in cached.split("----\n")[1:3]]
    assert all(t.startswith("he") and len(t) == 11 for t in texts), texts
    assert sample.main(argv + ["--num-samples", "2", "--no-cache"]) == 0
    plain = capsys.readouterr().out
    assert [chunk.split("\n---- ")[0] for chunk in plain.split("----\n")[1:3]] == texts
    assert sample.main(["--checkpoint", path, "--prompt", "he", "--max-new-tokens", "5", "--top-k", "0",
                        "--top-p", "0.9", "--seed", "3", "--num-samples", "1", "--backend", "numpy"]) == 0


def test_sample_script_errors(tmp_path, capsys):
    """A user's mistake is one line on stderr and exit code 2 (npformer.train.cli.run_script), no traceback."""
    sample = _load("sample")
    assert run_script(sample.main, ["--checkpoint", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such file" in err and "Traceback" not in err
    path = _write_checkpoint(tmp_path)
    assert run_script(sample.main, ["--checkpoint", path, "--prompt", "xyz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'x'" in err and "Traceback" not in err
