"""The pretrained-model scripts end to end, on a tiny Hugging Face directory npformer writes itself (a GPT-2 and a
byte-level BPE built by hand, so no download and no transformers needed): sample.py --hf samples with the cache;
finetune.py trains from the pretrained weights with their tokenizer and leaves a checkpoint that sample.py and
export_hf.py take; transformers reads the exported directory (when installed); mistakes are one line, exit 2."""

import importlib.util
import os

import numpy as np
import pytest

from npformer import backend
from npformer.data import BPETokenizer
from npformer.data.bpe import bytes_to_unicode
from npformer.models import GPT, GPTConfig
from npformer.train.cli import run_script

from .helpers import randomize_parameters

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TEXT = "the cat sat on the mat; then the cat ran. Don't stop!\n" * 60


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pretrained(tmp_path):
    """A directory as the Hugging Face hub has them: config.json, model.safetensors and the tokenizer's files."""
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = [("Ġ", "c"), ("a", "t"), ("Ġc", "at"), ("h", "e"), ("t", "he"), ("Ġ", "the")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = BPETokenizer(vocab, merges, [{"content": "<|endoftext|>", "id": len(vocab), "special": True}])
    config = GPTConfig.preset("gpt2-style", vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                              n_embd=16)
    path = tmp_path / "gpt2-tiny"
    randomize_parameters(GPT(config), 0, scale=0.2).save_pretrained(path)
    tok.save_pretrained(path)
    data = tmp_path / "my.txt"
    data.write_text(TEXT, encoding="utf-8")
    return path, data, tok


def test_sample_hf_directory(pretrained, capsys):
    path, _, _ = pretrained
    sample = _load("sample")
    argv = ["--hf", str(path), "--prompt", "the cat", "--max-new-tokens", "6", "--num-samples", "1",
            "--temperature", "0"]
    assert sample.main(argv) == 0
    out = capsys.readouterr().out
    assert "(gpt2)" in out and "---- sample 1 ----\nthe cat" in out and "key/value cache" in out
    cached = out.split("---- sample 1 ----\n")[1].split("\n---- ")[0]
    assert sample.main(argv + ["--no-cache"]) == 0
    assert capsys.readouterr().out.split("---- sample 1 ----\n")[1].split("\n---- ")[0] == cached


def test_finetune_then_sample_and_export(pretrained, tmp_path, capsys):
    path, data, tok = pretrained
    out = tmp_path / "run"
    finetune = _load("finetune")
    argv = ["--init-from", str(path), "--data", str(data), "--block-size", "16", "--max-iters", "4",
            "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--workers", "1", "--learning-rate",
            "1e-2", "--min-lr", "1e-2", "--out-dir", str(out), "--sample-tokens", "5"]
    assert finetune.main(argv) == 0
    text = capsys.readouterr().out
    assert "context 16" in text and "fine-tuned to step 4" in text and "---- sample 1 ----" in text
    ckpt = out / "ckpt.npz"
    assert ckpt.exists()
    before = GPT.from_pretrained(path, block_size=16)
    sample = _load("sample")
    assert sample.main(["--checkpoint", str(ckpt), "--prompt", "the", "--max-new-tokens", "4",
                        "--num-samples", "1"]) == 0
    assert "(step 4)" in capsys.readouterr().out
    export = _load("export_hf")
    assert export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "exported")]) == 0
    capsys.readouterr()
    after = GPT.from_pretrained(tmp_path / "exported")
    assert after.config.block_size == 16 and BPETokenizer.from_pretrained(tmp_path / "exported").to_dict() == \
        tok.to_dict()
    moved = [name for (name, p), (_, q) in zip(before.named_parameters(), after.named_parameters())
             if not np.array_equal(backend.to_numpy(p.data), backend.to_numpy(q.data))]
    assert "wte.weight" in moved and len(moved) > 5  # it trained, and the trained weights were exported
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "exported"))
    ids = theirs_tok("the cat sat<|endoftext|>")["input_ids"]
    assert ids == tok.encode("the cat sat<|endoftext|>").tolist()
    with torch.no_grad():
        logits = theirs(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(logits, backend.to_numpy(after.forward(np.array([ids]))), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("script, args, fragment", [
    ("sample", ["--hf", "{tmp}/nowhere"], "'{tmp}/nowhere' is not a directory"),
    ("finetune", ["--init-from", "{tmp}", "--data", "{data}"], "has neither tokenizer.json nor vocab.json"),
    ("finetune", ["--init-from", "{path}", "--data", "{tmp}/missing.txt"], "missing.txt': no such file"),
    ("finetune", ["--init-from", "{path}", "--data", "{data}", "--block-size", "64"],
     "block_size=64 exceeds the 32 learned position embeddings"),
    ("export_hf", ["--checkpoint", "{tmp}/none.npz", "--out", "{tmp}/x"], "no such file"),
])
def test_mistakes_are_one_line(pretrained, tmp_path, capsys, script, args, fragment):
    path, data, _ = pretrained
    fill = dict(tmp=str(tmp_path), data=str(data), path=str(path))
    assert run_script(_load(script).main, [a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment.format(**fill) in err and "Traceback" not in err
