"""GPT-2 small (124M parameters, random weights) on this machine: npformer beside PyTorch, in one run.

1. Training step (forward, backward, clipping at 1.0, AdamW), float32, on a (B, T) batch of random tokens:
   npformer's GPT beside transformers' GPT2LMHeadModel in PyTorch eager mode, both built from the same weights
   (npformer writes them with save_pretrained, transformers reads them) and both taking the cross-entropy of
   every position. Tokens per second = B * T / median step time.
2. Generation with the key/value cache, greedy, batch 1: npformer's generate beside transformers' generate, from
   the same prompt and weights (the tokens are compared too: greedy decoding of one model should agree).
3. The byte-level BPE tokenizer's throughput on 1 MB of Python source: npformer.BPETokenizer (pure Python)
   beside Hugging Face's Rust tokenizer, with a 20k vocabulary trained here by the tokenizers package (or the real
   GPT-2 files with --tokenizer DIR).

    python benchmarks/gpt2_small.py                       # about 3-5 minutes on 2 cores
    python benchmarks/gpt2_small.py --batch-size 4 --block-size 512 --steps 5
    python benchmarks/gpt2_small.py --tokenizer path/to/gpt2

Needs torch and transformers (test oracles and benchmark references only: npformer never imports them).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import npformer  # noqa: E402
from npformer import backend  # noqa: E402
from npformer.data import BPETokenizer  # noqa: E402
from npformer.decode.generate import generate  # noqa: E402
from npformer.models import GPT, GPTConfig  # noqa: E402
from npformer.train.optim import AdamW, clip_grad_norm, param_groups  # noqa: E402

GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)


class OursStep:
    """npformer: zero_grad, loss, backward, clip, AdamW. Returns (seconds, loss)."""

    def __init__(self, model, lr=1e-4):
        self.model = model
        self.opt = AdamW(param_groups(model.named_parameters(), 0.1), lr=lr, betas=(0.9, 0.95))

    def __call__(self, x, y):
        t0 = time.perf_counter()
        self.model.zero_grad()
        loss = self.model.loss(x, y)
        self.model.backward()
        clip_grad_norm(self.model.parameters(), 1.0)
        self.opt.step()
        return time.perf_counter() - t0, backend.to_float(loss)


class TorchStep:
    """PyTorch eager, the same step: the cross-entropy of every position, nanoGPT's AdamW groups."""

    def __init__(self, model, lr=1e-4):
        import torch

        self.torch, self.model = torch, model
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def __call__(self, x, y):
        torch = self.torch
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(torch.from_numpy(x)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), torch.from_numpy(y).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return time.perf_counter() - t0, loss.item()


def python_source(n_bytes: int) -> str:
    text, lib = "", sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(lib, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text += f.read()
        if len(text.encode("utf-8")) > 3 * n_bytes:
            break
    return text


def bpe_benchmark(tokenizer_dir: str | None) -> None:
    text = python_source(1_000_000)
    train_text, text = text[:-1_000_000], text[-1_000_000:]
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer_dir is None:
            import tokenizers as tk

            tok = tk.Tokenizer(tk.models.BPE())
            tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = tk.decoders.ByteLevel()
            tok.train_from_iterator([train_text], tk.trainers.BpeTrainer(
                vocab_size=20000, special_tokens=["<|endoftext|>"],
                initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
            tok.save(os.path.join(tmp, "tokenizer.json"))
            tokenizer_dir = tmp
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        ours = BPETokenizer.from_pretrained(tokenizer_dir)
        if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
            theirs = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tokenizer_dir, "tokenizer.json"))
        else:
            theirs = AutoTokenizer.from_pretrained(tokenizer_dir)
        n = len(text.encode("utf-8"))
        t0 = time.perf_counter()
        ids = ours.encode(text)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids_ours_warm = ours.encode(text)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = theirs(text)["input_ids"]
        t_theirs = time.perf_counter() - t0
    print(f"\nBPE tokenizer, {n / 1e6:.2f} MB of Python source, vocabulary {ours.vocab_size:,}, {len(ids):,} tokens")
    print(f"  npformer.BPETokenizer (pure Python)   {n / t_ours / 1e6:6.2f} MB/s  ({t_ours:.2f} s; "
          f"{n / t_warm / 1e6:.2f} MB/s again with its word cache warm)")
    print(f"  Hugging Face tokenizers (Rust)        {n / t_theirs / 1e6:6.2f} MB/s  ({t_theirs:.2f} s)")
    print(f"  same ids: {'yes' if ids.tolist() == ref and ids_ours_warm.tolist() == ref else 'NO'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256, help="tokens per sequence in a training step")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="timed generation rounds (after one warm-up)")
    ap.add_argument("--tokenizer", metavar="DIR", help="time these tokenizer files (default: train a 20k BPE)")
    ap.add_argument("--no-bpe", action="store_true", help="skip the tokenizer benchmark")
    args = ap.parse_args(argv)
    import torch
    import transformers

    npformer.kernels.cpu.keep_host_memory()
    torch.manual_seed(0)
    B, T = args.batch_size, args.block_size
    print(f"GPT-2 small, random weights, float32 | {os.cpu_count()} cores | numpy {np.__version__}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")

    ours = GPT(GPTConfig.preset("gpt2-style", **GPT2_SMALL))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ours.save_pretrained(tmp)
        t_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = GPT.from_pretrained(tmp)
        t_load = time.perf_counter() - t0
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="sdpa")
    print(f"{ours.num_parameters():,} parameters; save_pretrained {t_save:.1f} s, from_pretrained {t_load:.1f} s "
          "(NumPy alone)")
    theirs.config.use_cache = True

    # -- 1. training step ----------------------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 50257, (B, T)), rng.integers(0, 50257, (B, T))) for _ in range(args.steps + 1)]
    theirs.train()
    steps = {"npformer (NumPy)": OursStep(ours), "PyTorch eager": TorchStep(theirs)}
    results = {name: [] for name in steps}
    for x, y in batches:  # interleaved, step by step: a busy moment of the machine falls on both
        for name, step in steps.items():
            results[name].append(step(x, y))
    medians = {name: statistics.median(t for t, _ in r[1:]) for name, r in results.items()}
    torch_s = medians["PyTorch eager"]
    print(f"\ntraining step, batch {B} x {T} tokens ({args.steps} timed steps after a warm-up, interleaved; median)")
    print(f"  {'':<24} {'s/step':>8} {'tokens/s':>10} {'vs torch':>9}   first losses (equal: same weights, batches)")
    for name, r in results.items():
        print(f"  {name:<24} {medians[name]:>8.2f} {B * T / medians[name]:>10,.0f} {torch_s / medians[name]:>8.2f}x   "
              f"{', '.join(f'{loss:.4f}' for _, loss in r[:3])}")

    # -- 2. generation with the key/value cache ---------------------------------------------------------------------
    # the same weights again (both models took optimizer steps above): npformer reads torch's updated ones
    theirs.eval()
    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        ours = GPT.from_pretrained(tmp)
    prompt = rng.integers(0, 50257, (1, args.prompt_tokens))
    n = args.new_tokens

    def ours_generate():
        return generate(ours, prompt, max_new_tokens=n, temperature=0.0)[0]

    def theirs_generate():
        with torch.no_grad():
            return theirs.generate(torch.from_numpy(prompt), max_new_tokens=n, do_sample=False, pad_token_id=0,
                                   use_cache=True)[0].numpy()

    runs = {"npformer generate": ours_generate, "transformers generate": theirs_generate}
    times, outputs = {name: [] for name in runs}, {}
    for round_ in range(args.rounds + 1):  # interleaved rounds; the first is a warm-up
        for name, run in runs.items():
            t0 = time.perf_counter()
            outputs[name] = run()
            if round_:
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"\ngeneration, greedy, batch 1, prompt {args.prompt_tokens} tokens, {n} new tokens, key/value cache "
          f"({args.rounds} interleaved rounds; median)")
    for name, t in medians.items():
        print(f"  {name:<24} {t:>8.2f} s {n / t:>8.1f} tokens/s {medians['transformers generate'] / t:>8.2f}x")
    a, b = outputs["npformer generate"], outputs["transformers generate"]
    agree = int(np.argmax(np.append(a != b, True))) if len(a) == len(b) else 0
    print(f"  same tokens: {'all ' + str(len(a)) if agree == len(a) else f'the first {agree}'}")

    if not args.no_bpe:
        bpe_benchmark(args.tokenizer)
    return 0


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(main))
