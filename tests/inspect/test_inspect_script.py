"""examples/inspect_model.py: from a training checkpoint and a text to the pictures and the head table; without
matplotlib one line naming the extra and exit code 2; and, though it is named like the standard library's
inspect module, the scripts beside it still import the real one."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from npformer.data import CharTokenizer
from npformer.models import GPT, GPTConfig
from npformer.train import TrainConfig, Trainer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SCRIPT = os.path.join(ROOT, "examples", "inspect_model.py")


def load_script():
    spec = importlib.util.spec_from_file_location("inspect_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    text = "def main():\n    return 0\n" * 40
    tok = CharTokenizer.from_text(text)
    ids = np.asarray(tok.encode(text))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    cfg = TrainConfig(max_iters=4, batch_size=4, warmup_iters=1, eval_interval=4, eval_iters=1, log_interval=2,
                      out_dir=str(out), quiet=True)
    Trainer(model, cfg, ids[:800], ids[800:], meta={"tokenizer": tok.to_dict()}).run()
    return out / "ckpt.npz"


def test_pictures_and_head_table(checkpoint, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert load_script().main(["--checkpoint", str(checkpoint), "--text", "def main():", "--out-dir",
                               str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "entropy" in out and "text: 11 tokens" in out
    for name in ("attention", "heads", "masks", "positions", "position_similarity", "norms", "gradient_flow"):
        assert os.path.getsize(tmp_path / f"{name}.png") > 2000, name


def test_only_some_pictures(checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    assert load_script().main(["--checkpoint", str(checkpoint), "--only", "masks", "--out-dir", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["masks.png"]
    with pytest.raises(ValueError, match="unknown picture"):
        load_script().main(["--checkpoint", str(checkpoint), "--only", "faces"])


def test_without_matplotlib_one_line_and_exit_2(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert load_script().main(["--checkpoint", str(checkpoint), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: plotting needs matplotlib, an optional extra of npformer: pip install 'npformer[plot]'"]
    assert not os.listdir(tmp_path)


def run(script, *args):
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_a_missing_checkpoint_is_one_line():
    proc = run("inspect_model.py", "--checkpoint", "nowhere/ckpt.npz")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "train a model first" in proc.stderr


def test_no_script_shadows_a_standard_library_module():
    """A script runs with its folder first on sys.path, so a sibling named like a standard-library module (an
    "inspect.py") would replace that module for every script there."""
    names = {n for n in sys.stdlib_module_names}
    for folder in ("examples", "benchmarks"):
        clashes = [f for f in os.listdir(os.path.join(ROOT, folder)) if f.endswith(".py") and f[:-3] in names]
        assert not clashes, f"{folder}/ has scripts named like standard-library modules: {clashes}"
