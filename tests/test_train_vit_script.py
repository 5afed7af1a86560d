"""examples/train_vit.py as a user runs it (a subprocess): a short run trains and reports held-out accuracy; without
scikit-learn it names what to install in one "error:" line with exit code 2; bad flags get one line too."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCRIPT = os.path.join(ROOT, "examples", "train_vit.py")


def run(*args, pythonpath=None, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}  # the script's own default: numpy
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_error_line(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_without_scikit_learn_it_says_what_to_install(tmp_path):
    fake = tmp_path / "sklearn"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named sklearn (a test stand-in)')\n")
    line = one_error_line(run("--epochs", "1", pythonpath=str(tmp_path)))
    assert "pip install scikit-learn" in line and "npformer[examples]" in line


def test_bad_flags_are_one_line(tmp_path):
    pytest.importorskip("sklearn")
    assert "patch_size=3 does not divide image_size=8" in one_error_line(run("--patch-size", "3"))
    assert "epochs must be a positive integer" in one_error_line(run("--epochs", "0"))


def test_a_short_run_trains(tmp_path):
    pytest.importorskip("sklearn")
    proc = run("--epochs", "2", "--n-layer", "1", "--n-embd", "16", "--ffn-hidden", "16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1347 training / 450 held-out images" in proc.stdout
    assert "held-out accuracy:" in proc.stdout
