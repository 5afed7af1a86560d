"""Every script answers a user's mistake with one line, "error: ...", and exit code 2, never a traceback; --debug
shows the traceback; Ctrl-C during training says where the last checkpoint is. Each case runs the script as a
user would, in a subprocess."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npformer.data import CharTokenizer
from npformer.models import GPT, GPTConfig
from npformer.train.checkpoint import save_checkpoint
from npformer.train.cli import run_script

from .helpers import interruptible

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "1", "--samples", "0", "--workers", "1"]


def run(script, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}  # the scripts' own default: numpy
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_user_error(proc, *fragments):
    """Exit code 2, no traceback, and one "error:" line that contains every fragment."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.fixture
def files(tmp_path):
    paths = {"empty": tmp_path / "empty.txt", "binary": tmp_path / "photo.png", "short": tmp_path / "three.txt",
             "good": tmp_path / "good.txt"}
    paths["empty"].write_bytes(b"")
    paths["binary"].write_bytes(b"ok so far\n\x89PNG\x00\x01\xff")
    paths["short"].write_text("abc", encoding="utf-8")
    paths["good"].write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# train_char.py
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["missing", "directory", "empty", "binary", "short"])
def test_train_char_data_files(tmp_path, files, case):
    data = {"missing": tmp_path / "missing.txt", "directory": tmp_path}.get(case) or files[case]
    proc = run("examples/train_char.py", "--data", data, "--out-dir", tmp_path / "out", *TINY)
    expected = {
        "missing": ["missing.txt", "no such file"],
        "directory": ["is a directory"],
        "empty": ["empty.txt", "is empty"],
        "binary": ["photo.png", "not UTF-8", "byte 0x89 at offset 10", "--tokenizer byte"],
        "short": ["three.txt", "has 3 characters", "context of 16", "at least 166 characters"],
    }[case]
    assert_user_error(proc, *expected)


def test_train_char_trains_on_any_file_as_bytes(tmp_path):
    data = tmp_path / "noise.bin"
    data.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())  # not UTF-8
    proc = run("examples/train_char.py", "--data", data, "--tokenizer", "byte", "--max-iters", "1",
               "--out-dir", tmp_path / "out", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "3,000 bytes, vocabulary 256" in proc.stdout


@pytest.mark.parametrize("args, fragments", [
    (["--n-embd", "130", "--n-head", "4"], ["n_embd=130 is not divisible by n_head=4"]),
    (["--min-lr", "1"], ["min_lr (1.0) exceeds learning_rate"]),
    (["--kernels", "quick"], ["kernels must be one of"]),
    (["--dropout", "1.5"], ["dropout must be in [0, 1)"]),
    (["--batch-size", "0"], ["batch_size must be >= 1"]),
    (["--resume"], ["ckpt.npz", "no such file"]),
])
def test_train_char_bad_settings(tmp_path, files, args, fragments):
    base = [a for a in TINY if a not in ("--batch-size", "4")] if "--batch-size" in args else TINY
    proc = run("examples/train_char.py", "--data", files["good"], "--out-dir", tmp_path / "out", *base, *args)
    assert_user_error(proc, *fragments)


def test_debug_shows_the_traceback(tmp_path):
    proc = run("examples/train_char.py", "--data", tmp_path / "missing.txt", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def test_a_short_run_fits_its_schedule_with_a_note(tmp_path, files):
    proc = run("examples/train_char.py", "--data", files["good"], "--max-iters", "2", "--out-dir", tmp_path / "o",
               *TINY)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note:")]
    assert notes == ["note: warmup_iters (100) does not fit in the 2-step schedule: it shrinks to 0"]


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, files):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples/train_char.py"), "--data", str(files["good"]),
                             "--max-iters", "100000", "--eval-interval", "5", "--log-interval", "1",
                             "--out-dir", str(out), *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=interruptible())
    try:
        deadline = time.time() + 60
        while not (out / "ckpt.npz").exists() and time.time() < deadline:  # at least one checkpoint written
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted at step "), stderr
    assert f"the last checkpoint is {out / 'ckpt.npz'} (step " in lines[0] and "--resume" in lines[0]


# ---------------------------------------------------------------------------------------------------------------
# sample.py: a checkpoint's entries are checked like its arrays
# ---------------------------------------------------------------------------------------------------------------
def _checkpoint(tmp_path, **meta_changes):
    tok = CharTokenizer.from_text("hello world\n")
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=6, n_layer=1, n_head=2, n_embd=8)
    meta = {"config": cfg.to_dict(), "tokenizer": tok.to_dict(), "step": 3}
    for key, value in meta_changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params=GPT(cfg).state_dict(), meta=meta)
    return path


@pytest.mark.parametrize("changes, fragments", [
    (dict(config=3), ["config: must be a mapping of GPTConfig fields, got int 3"]),
    (dict(config=None), ["config: must be a mapping", "NoneType"]),
    (dict(config={"n_layer": "two"}), ["config: field 'n_layer' must be int, got str 'two'"]),
    (dict(config={"n_layers": 2}), ["config: unknown field(s) 'n_layers'"]),
    (dict(config={"bias": 1}), ["config: field 'bias' must be bool, got int 1"]),
    (dict(tokenizer={"kind": "char", "chars": ["ab"]}), ["tokenizer:", "one character"]),
    (dict(tokenizer=[1, 2]), ["tokenizer:", "unknown tokenizer kind"]),
    (dict(config={"n_embd": 16}), ["parameters:", "shape"]),
])
def test_sample_refuses_bad_checkpoint_entries(tmp_path, changes, fragments):
    path = _checkpoint(tmp_path, **changes)
    proc = run("examples/sample.py", "--checkpoint", path, "--num-samples", "1", "--max-new-tokens", "2")
    assert_user_error(proc, str(path), *fragments)


def test_sample_without_a_checkpoint_says_what_to_do(tmp_path):
    proc = run("examples/sample.py", "--checkpoint", tmp_path / "none.npz")
    assert_user_error(proc, "none.npz", "no such file")
    assert "train a model first: python examples/train_char.py" in proc.stderr
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert_user_error(run("examples/sample.py", "--checkpoint", tmp_path / "junk.npz"), "not a .npz")


# ---------------------------------------------------------------------------------------------------------------
# the other scripts
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", ["examples/train_seq2seq.py", "examples/train_classifier.py"])
@pytest.mark.parametrize("args, fragments", [
    (["--steps", "0"], ["steps must be a positive integer, got 0"]),
    (["--n-head", "3"], ["n_embd=64 is not divisible by n_head=3"]),
    (["--batch-size", "-4"], ["batch_size must be a positive integer, got -4"]),
])
def test_encoder_scripts_bad_settings(script, args, fragments):
    assert_user_error(run(script, *args), *fragments)


def test_benchmarks_take_debug_and_refuse_bad_flags():
    proc = run("benchmarks/generate.py", "--tokens", "nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "invalid int value" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# run_script itself
# ---------------------------------------------------------------------------------------------------------------
def test_run_script_keeps_unexpected_tracebacks(capsys):
    def main(argv):
        raise KeyError("a bug, not a user's mistake")

    with pytest.raises(KeyError):
        run_script(main, [])

    def mistaken(argv):
        raise ValueError("line one\n   line two")

    assert run_script(mistaken, []) == 2
    assert capsys.readouterr().err == "error: line one line two\n"
    with pytest.raises(ValueError):
        run_script(mistaken, ["--debug"])
    assert run_script(lambda argv: np.float64(3), []) == 0  # a main returning data (the encoder scripts) is success


def test_a_reader_that_stops_early_is_not_an_error():
    """`python -m npformer.size gpt2 | head -1`: the closed pipe ends the script quietly, exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}
    # 200 reports, about 200 KB: more than a pipe holds, so the writer really meets the closed pipe
    proc = subprocess.Popen([sys.executable, "-m", "npformer.size", *["gpt2"] * 200],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and first and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
