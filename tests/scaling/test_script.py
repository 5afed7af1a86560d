"""examples/scaling.py as a user runs it (a subprocess): a tiny sweep end to end with its report, figure and
resume; Ctrl-C, then the same command finishing the sweep; and every kind of bad input as one "error:" line with
exit code 2."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ..helpers import interruptible

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SCRIPT = os.path.join(ROOT, "examples", "scaling.py")
TINY = ["--sizes", "1,8,2;1,16,2;2,16,2", "--d-points", "2", "--d-span", "3", "--block-size", "16", "--batch-size",
        "4", "--min-steps", "4", "--bootstrap", "5", "--progress-seconds", "0.2", "--no-plot"]


def run(*args, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}  # the script's own default: numpy
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-800:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be, that is the question.\nwhether 'tis nobler in the mind to suffer\n" * 40,
                    encoding="utf-8")
    return path


def test_a_tiny_sweep_fits_reports_and_resumes(tmp_path, corpus):
    out = tmp_path / "out"
    proc = run("--data", corpus, "--out-dir", out, "--budget-minutes", "0.08", "--jobs", "1", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plan: 3 sizes x 2 token budgets = 6 runs" in proc.stdout
    assert "sweep: 6/6 runs done" in proc.stdout and "approach 3" in proc.stdout
    assert "Chinchilla" in proc.stdout and "Why this differs" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 6 and (out / "results.csv").exists() and (out / "report.txt").exists()
    again = run("--data", corpus, "--out-dir", out, "--budget-minutes", "0.08", "--jobs", "1", *TINY)
    assert again.returncode == 0 and "resuming the sweep" in again.stdout and "6 of 6 runs finished" in again.stdout
    assert "runs to train" not in again.stdout
    refit = run("--data", corpus, "--out-dir", out, "--fit-only", "--bootstrap", "0")
    assert refit.returncode == 0 and "approach 3" in refit.stdout and "runs to train" not in refit.stdout


def test_ctrl_c_stops_with_checkpoints_and_the_same_command_finishes(tmp_path, corpus):
    out = tmp_path / "out"
    args = [SCRIPT, "--data", str(corpus), "--out-dir", str(out), "--budget-minutes", "0.1", "--jobs", "2",
            "--checkpoint-seconds", "1000", *TINY]
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=interruptible())
    seen = ""
    deadline = time.monotonic() + 120
    while "sweep: " not in seen and time.monotonic() < deadline:  # training has started
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + stdout, stderr)
    assert "Traceback" not in stderr and "run the same command again to resume" in stderr
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) < len(results["plan"])
    stopped = [d for d in os.listdir(out / "runs") if (out / "runs" / d / "ckpt.npz").exists()]
    assert stopped, "a stopped run leaves a checkpoint"
    again = run(*args[1:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming the sweep" in again.stdout and "resumed from its checkpoint at step" in again.stdout
    assert len(json.loads((out / "results.json").read_text())["runs"]) == len(results["plan"])


@pytest.mark.parametrize("args, fragments", [
    (["--sizes", ""], ["the grid is empty"]),
    (["--d-points", "0"], ["the grid is empty"]),
    (["--sizes", "1,16"], ["--sizes", "n_layer,n_embd,n_head"]),
    (["--budget-minutes", "0.0001"], ["too small for one run"]),
    (["--budget-minutes", "-1"], ["--budget-minutes must be positive"]),
    (["--bootstrap", "-1"], ["--bootstrap must be >= 0"]),
    (["--sizes", "1,30,4"], ["not divisible"]),
])
def test_bad_input_is_one_error_line(tmp_path, corpus, args, fragments):
    base = ["--data", corpus, "--out-dir", tmp_path / "out", "--jobs", "1", *TINY]
    assert_user_error(run(*base, *args), *fragments)


def test_a_corrupt_results_file_is_one_error_line(tmp_path, corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{not json", encoding="utf-8")
    assert_user_error(run("--data", corpus, "--out-dir", out, "--jobs", "1", *TINY), "results file is corrupt",
                      "delete it")
    assert_user_error(run("--data", corpus, "--out-dir", tmp_path / "none", "--fit-only"), "run the sweep first")
    assert_user_error(run("--data", tmp_path / "missing.txt"), "missing.txt")
