"""python -m npformer.size: tables, --json, every way to name a model, and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from npformer.models import GPT, EncoderConfig, GPTConfig
from npformer.size import size_of
from npformer.size.__main__ import main
from npformer.train import TrainConfig, Trainer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
KEYS = {"model", "kind", "params", "params_by_component", "params_active", "context", "batch_size", "dtype",
        "flops_per_token_forward", "flops_per_token_training", "flops_per_token_training_recompute",
        "memory_training_bytes", "kv_cache_dtype", "kv_cache_bytes_per_token",
        "cross_kv_cache_bytes_per_source_token", "notes"}


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_of_named_models(capsys):
    gpt2, mixtral, bert, t5 = run_json(capsys, "gpt2", "mixtral-8x7b", "bert-base", "t5-base", "--context", "512")
    assert set(gpt2) == KEYS
    assert gpt2["params"] == gpt2["params_active"] == 124_439_808 and gpt2["context"] == 512
    assert sum(gpt2["params_by_component"].values()) == gpt2["params"]
    # 12 layers x 2 (K, V) x 768 x 4 bytes
    assert gpt2["kv_cache_bytes_per_token"] == 12 * 2 * 768 * 4
    assert gpt2["cross_kv_cache_bytes_per_source_token"] is None
    assert mixtral["params_active"] < mixtral["params"] / 3
    assert bert["kv_cache_bytes_per_token"] is None  # an encoder does not generate
    assert t5["cross_kv_cache_bytes_per_source_token"] == 12 * 2 * 768 * 4


def test_dtypes_and_batch(capsys):
    (small,) = run_json(capsys, "llama-2-7b", "--context", "128", "--dtype", "bfloat16", "--kv-dtype", "int8")
    (big,) = run_json(capsys, "llama-2-7b", "--context", "128", "--dtype", "bfloat16", "--batch-size", "4")
    assert small["memory_training_bytes"]["parameters"] == 2 * 6_738_415_616
    assert small["kv_cache_bytes_per_token"] == 32 * 2 * 4096 * 1  # Llama-2 7B: no GQA, 32 layers
    assert big["memory_training_bytes"]["activations"] == 4 * small["memory_training_bytes"]["activations"]


def test_table(capsys):
    assert main(["gpt2"]) == 0
    out = capsys.readouterr().out
    assert "124.44M (124,439,808)" in out and "KV cache per token" in out and "AdamW state" in out


def test_hf_config_checkpoint_and_npformer_config(tmp_path, capsys):
    hf = tmp_path / "config.json"
    hf.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "vocab_size": 100,
                              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}))
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16)
    data = (np.arange(2000) * 5) % 13
    Trainer(GPT(cfg), TrainConfig(max_iters=1, batch_size=2, warmup_iters=0, eval_iters=1, out_dir=str(tmp_path),
                                  quiet=True), data[:1800], data[1800:]).run()
    enc = tmp_path / "encoder.json"
    enc.write_text(json.dumps(EncoderConfig(n_classes=3).to_dict()))
    argv = ["--hf-config", str(hf), "--hf-config", str(tmp_path), "--checkpoint", str(tmp_path / "ckpt.npz"),
            "--npformer-config", str(enc)]
    llama, llama_dir, gpt, encoder = run_json(capsys, *argv)
    assert llama["params"] == 100 * 64 * 2 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) + 64
    assert gpt["params"] == GPT(cfg).num_parameters() and gpt["model"].endswith("ckpt.npz")
    assert encoder["params"] == size_of(EncoderConfig(n_classes=3))["params"]
    assert llama_dir["params"] == llama["params"]  # a model directory: its config.json


@pytest.mark.parametrize("argv, fragment", [
    (["gpt5"], "unknown model 'gpt5'; named models: gpt2"),
    ([], "name a model"),
    (["gpt2", "--context", "4096"], "context 4096 exceeds gpt2's longest context of 1024"),
])
def test_mistakes_are_one_line(argv, fragment):
    env = {k: v for k, v in os.environ.items() if k != "NPFORMER_BACKEND"}  # no GPU asked for here
    proc = subprocess.run([sys.executable, "-m", "npformer.size", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and fragment in proc.stderr


def test_bad_hf_configs_are_named(tmp_path):
    cases = {"not_json.json": "{", "phi.json": json.dumps({"model_type": "phi"}),
             "sizes.json": json.dumps({"model_type": "gpt2", "n_layer": 0})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match="not a JSON file"):
        main(["--hf-config", str(tmp_path / "not_json.json")])
    with pytest.raises(ValueError, match="model_type 'phi' is not supported; supported model types: gpt2, llama"):
        main(["--hf-config", str(tmp_path / "phi.json")])
    with pytest.raises(ValueError, match="n_layer must be a positive integer, got 0"):
        main(["--hf-config", str(tmp_path / "sizes.json")])
