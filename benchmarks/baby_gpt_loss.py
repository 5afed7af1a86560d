"""nanoGPT's CPU "baby GPT" on Shakespeare: the validation loss npformer reaches, beside nanoGPT's recipe in PyTorch.

The recipe (nanoGPT's config/train_shakespeare_char.py with its README's CPU overrides): context 64, batch 12,
4 layers, 4 heads, width 128, 2000 iterations, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, AdamW betas
(0.9, 0.99), weight decay 0.1 on matrices and embeddings, clipping 1.0, dropout 0, tied embeddings. Each run's
loss after 2000 steps is measured three ways, because they differ by more than the targets people quote:

    20-batch   nanoGPT's own figure (--eval_iters=20): the mean over 20 random batches; spread about 0.014
    200-batch  the same with 200 batches
    whole      every non-overlapping 64-character window of the validation split: no sampling noise

The PyTorch side is nanoGPT's train.py loop written out here: torch.randint batches, an evaluation every 250 steps
on 20 batches per split (which consumes the generator, as nanoGPT's does), exact GELU, the warmup
lr * (it + 1) / (warmup + 1). It needs torch (optional); npformer never imports it.

    python benchmarks/baby_gpt_loss.py                                   # both, seeds 1337 and 1338, biases on
    python benchmarks/baby_gpt_loss.py --no-bias --seeds 1337,1338,1339  # nanoGPT's train.py default: no biases
    python benchmarks/baby_gpt_loss.py --frameworks npformer --data my.txt

Uses ../shared/data/tinyshakespeare.txt when it is there; otherwise --data, or Python standard-library text.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
B, T, L, H, C = 12, 64, 4, 4, 128
ITERS, WARMUP, LR, MIN_LR = 2000, 100, 1e-3, 1e-4


def whole_split_windows(val_ids):
    """Every non-overlapping window of the validation split: inputs and targets, each (W, T)."""
    w = (len(val_ids) - 1) // T
    return val_ids[:w * T].reshape(w, T), val_ids[1:w * T + 1].reshape(w, T)


def read_char_corpus(data: str | None):
    """(path or None, CharTokenizer, train ids, validation ids) of ``data``, else tinyshakespeare from ../shared/data
    when it is there, else Python standard-library source; the last 10% is the validation split, as in nanoGPT."""
    from npformer.data import CharTokenizer, train_val_split
    from npformer.data.corpora import stdlib_corpus

    path = data or (SHAKESPEARE if os.path.exists(SHAKESPEARE) else None)
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = stdlib_corpus()
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = (np.asarray(a) for a in train_val_split(tokenizer.encode(text), val_fraction=0.1))
    return path, tokenizer, train_ids, val_ids


def run_npformer(train_ids, val_ids, vocab: int, seed: int, bias: bool) -> tuple[float, float, float, float]:
    from npformer import backend
    from npformer.data import BatchSampler
    from npformer.kernels.cpu import keep_host_memory
    from npformer.models import GPT, GPTConfig
    from npformer.train.trainer import TrainConfig, Trainer

    keep_host_memory()
    model = GPT(GPTConfig(vocab_size=vocab, block_size=T, n_layer=L, n_head=H, n_embd=C, dropout=0.0, bias=bias,
                          seed=seed))
    cfg = TrainConfig(max_iters=ITERS, batch_size=B, learning_rate=LR, min_lr=MIN_LR, warmup_iters=WARMUP,
                      eval_interval=250, eval_iters=20, log_interval=ITERS, seed=seed, quiet=True, workers=None)
    trainer = Trainer(model, cfg, train_ids, val_ids)
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    model.eval()
    batches = BatchSampler(val_ids, T, B, seed=7)
    e200 = float(np.mean([backend.to_float(model.loss(*batches.next())) for _ in range(200)]))
    xs, ys = whole_split_windows(val_ids)
    whole = sum(backend.to_float(model.loss(xs[i:i + 64], ys[i:i + 64])) * len(xs[i:i + 64])
                for i in range(0, len(xs), 64)) / len(xs)
    return trainer.final_val_loss, e200, whole, wall


def run_torch(train_ids, val_ids, vocab: int, seed: int, bias: bool) -> tuple[float, float, float, float]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    train, val = torch.from_numpy(train_ids.astype(np.int64)), torch.from_numpy(val_ids.astype(np.int64))

    def get_batch(split):
        data = train if split == "train" else val
        ix = torch.randint(len(data) - T, (B,))
        return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + 1 + T] for i in ix])

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C, bias=bias), nn.LayerNorm(C, bias=bias)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C, bias=bias), nn.Linear(C, C, bias=bias)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C, bias=bias), nn.Linear(4 * C, C, bias=bias)

        def forward(self, x):
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(x.shape[0], x.shape[1], H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
            x = x + self.c_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class NanoGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C, bias=bias)
            for m in self.modules():  # nanoGPT's _init_weights, then its scaled residual projections
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
            for name, p in self.named_parameters():
                if name.endswith(("c_proj.weight", "mlp_proj.weight")):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T  # tied output embedding
            return F.cross_entropy(logits.view(-1, vocab), targets.reshape(-1))

    model = NanoGPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.99))

    def lr_at(it):
        if it < WARMUP:
            return LR * (it + 1) / (WARMUP + 1)
        ratio = (it - WARMUP) / (ITERS - WARMUP)
        return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)

    @torch.no_grad()
    def estimate(iters):
        model.eval()
        out = {split: sum(model(*get_batch(split)).item() for _ in range(iters)) / iters for split in ("train", "val")}
        model.train()
        return out

    start = time.perf_counter()
    it, (x, y) = 0, get_batch("train")
    while True:  # nanoGPT's loop: evaluate at every 250th iteration, the last one before its step
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        if it % 250 == 0:
            e20 = estimate(20)["val"]
            if it == ITERS:
                break
        loss = model(x, y)
        x, y = get_batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        it += 1
    wall = time.perf_counter() - start
    e200 = estimate(200)["val"]
    xs, ys = (torch.from_numpy(a.astype(np.int64)) for a in whole_split_windows(val_ids))
    with torch.no_grad():
        model.eval()
        whole = sum(model(xs[i:i + 64], ys[i:i + 64]).item() * len(xs[i:i + 64])
                    for i in range(0, len(xs), 64)) / len(xs)
    return e20, e200, whole, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    ap.add_argument("--frameworks", default="npformer,torch", help="comma-separated: npformer, torch")
    ap.add_argument("--seeds", default="1337,1338")
    ap.add_argument("--no-bias", action="store_true", help="no biases in linears and LayerNorms (nanoGPT's default)")
    ap.add_argument("--data", help="text file (default: tinyshakespeare from ../shared/data when it is there)")
    args = ap.parse_args()

    path, tokenizer, train_ids, val_ids = read_char_corpus(args.data)
    print(f"data: {path or 'Python standard-library source (no tinyshakespeare here)'}, "
          f"vocabulary {tokenizer.vocab_size} | biases {'off' if args.no_bias else 'on'} | {ITERS} steps")
    print(f"{'framework':<10} {'seed':>6} {'20-batch':>9} {'200-batch':>10} {'whole':>8} {'wall s':>7}")
    runners = {"npformer": run_npformer, "torch": run_torch}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.frameworks.split(","):
            if name == "torch":
                try:
                    import torch  # noqa: F401
                except ImportError:
                    print("torch      (not installed: skipped)")
                    continue
            e20, e200, whole, wall = runners[name](train_ids, val_ids, tokenizer.vocab_size, seed, not args.no_bias)
            print(f"{name:<10} {seed:>6} {e20:>9.4f} {e200:>10.4f} {whole:>8.4f} {wall:>7.0f}", flush=True)


if __name__ == "__main__":
    from npformer.train.cli import run_script

    sys.exit(run_script(lambda argv: main()))
