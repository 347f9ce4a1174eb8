#!/usr/bin/python3
"""Language-model benchmark: megabatch-trainer's char_lstm and tiny_bert
against the same models and loop written in Python with Debian's
python3-torch (the same LibTorch 1.13), side by side in one run, and the
quality each reaches in a fixed short budget.

Throughput: for each (model, batch) it alternates C++ and Python runs
(--reps each) with AdamW and the same thread count, takes every step's
samples/s after --warmup steps, and prints the medians, tokens/s and the
ratio (C++ / Python). Both index a preloaded tensor of windows (char_lstm)
or sequences (tiny_bert) with a shuffled order every step; tiny_bert masks
each batch with BERT's 80/10/10 rule on the CPU and predicts only the masked
positions, in both. The Python side reads the same corpus bytes; its
tiny_bert trains on the ids megabatch-tokenize cached (python3-sentencepiece
is not needed).

Quality (--quality-steps, 0 to skip): the C++ trainer alone, LAMB, batch 64,
poly decay after a warmup; prints the final val_bpc / val_mlm_accuracy and
the training seconds.

The trainer keeps freed memory for reuse (mallopt in its main());
--python-mallopt makes this Python process do the same, to separate that
allocator setting from the rest of the C++/Python difference.

Usage: /usr/bin/python3 bench/lm_throughput.py [--trainer PATH] [--threads N]
       [--reps N] [--quality-steps N] [--only char_lstm|tiny_bert] [--python-mallopt]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from train_throughput import keep_freed_memory

CORPUS = "/usr/share/games/fortunes"
MODELS = {
    "char_lstm": {"type": "char_lstm", "hidden": 256, "layers": 1, "embedding": 64,
                  "seq_len": 128},
    "tiny_bert": {"type": "tiny_bert", "hidden": 128, "layers": 2, "heads": 2, "ffn": 512,
                  "seq_len": 128, "vocab_size": 2048, "bias": True},
}
CASES = [  # model, batch, steps
    ("char_lstm", 64, 12), ("char_lstm", 256, 5),
    ("tiny_bert", 64, 12), ("tiny_bert", 256, 6),
]
FIRST_ORDINARY, MASK_ID = 4, 3


def corpus_bytes():
    """The corpus's regular, non-binary files (what the trainer reads)."""
    data = bytearray()
    for name in sorted(os.listdir(CORPUS)):
        path = os.path.join(CORPUS, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            raw = f.read()
        if b"\0" not in raw:
            data += raw
    return torch.frombuffer(data, dtype=torch.uint8).long()


class CharLstm(torch.nn.Module):
    """megabatch's CharLstmImpl."""
    def __init__(self, o):
        super().__init__()
        self.embed = torch.nn.Embedding(256, o["embedding"])
        self.lstm = torch.nn.LSTM(o["embedding"], o["hidden"], o["layers"], batch_first=True)
        self.head = torch.nn.Linear(o["hidden"], 256)

    def forward(self, tokens):
        return self.head(self.lstm(self.embed(tokens))[0])


class TinyBert(torch.nn.Module):
    """megabatch's TinyBertImpl, layer for layer."""
    def __init__(self, o, vocab):
        super().__init__()
        h = o["hidden"]
        self.heads = o["heads"]
        self.tok_embed = torch.nn.Embedding(vocab, h)
        self.pos_embed = torch.nn.Parameter(torch.zeros(o["seq_len"], h))
        self.embed_norm = torch.nn.LayerNorm(h)
        self.layers = torch.nn.ModuleList()
        for _ in range(o["layers"]):
            layer = torch.nn.Module()
            layer.norm1 = torch.nn.LayerNorm(h)
            layer.qkv = torch.nn.Linear(h, 3 * h, bias=o["bias"])
            layer.proj = torch.nn.Linear(h, h, bias=o["bias"])
            layer.norm2 = torch.nn.LayerNorm(h)
            layer.fc1 = torch.nn.Linear(h, o["ffn"], bias=o["bias"])
            layer.fc2 = torch.nn.Linear(o["ffn"], h, bias=o["bias"])
            self.layers.append(layer)
        self.final_norm = torch.nn.LayerNorm(h)
        self.out_bias = torch.nn.Parameter(torch.zeros(vocab)) if o["bias"] else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.02)
                elif "norm" not in name:
                    p.zero_()

    def forward(self, tokens):
        n, length = tokens.shape
        h = self.tok_embed.embedding_dim
        d = h // self.heads
        x = self.embed_norm(self.tok_embed(tokens) + self.pos_embed[:length])
        for l in self.layers:
            qkv = l.qkv(l.norm1(x)).view(n, length, 3, self.heads, d).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(d), -1)
            x = x + l.proj((attention @ qkv[2]).transpose(1, 2).reshape(n, length, h))
            x = x + l.fc2(F.gelu(l.fc1(l.norm2(x))))
        return self.final_norm(x)

    def logits(self, hidden):
        out = hidden @ self.tok_embed.weight.t()
        return out + self.out_bias if self.out_bias is not None else out


def mask_tokens(tokens, vocab, gen):
    choose = torch.rand(tokens.shape, generator=gen)
    action = torch.rand(tokens.shape, generator=gen)
    random = torch.randint(FIRST_ORDINARY, vocab, tokens.shape, generator=gen)
    chosen = (choose < 0.15) & (tokens >= FIRST_ORDINARY)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(tokens, MASK_ID), tokens)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random, inputs)
    return inputs, chosen


def token_sequences(trainer, seq_len, vocab_size):
    """The training ids megabatch-tokenize cached, as [sequences, seq_len]."""
    tool = os.path.join(os.path.dirname(trainer), "megabatch-tokenize")
    reply = json.loads(subprocess.run(
        [tool, "--corpus", CORPUS, "--vocab-size", str(vocab_size),
         "--validation-fraction", "0.05"], check=True, capture_output=True, text=True).stdout)
    with open(reply["train"], "rb") as f:
        ids = torch.frombuffer(bytearray(f.read()), dtype=torch.int32).long()
    rows = ids.shape[0] // seq_len
    return ids[:rows * seq_len].view(rows, seq_len), reply["vocab_size"]


def run_python(data, model_name, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    o = MODELS[model_name]
    if model_name == "char_lstm":
        model = CharLstm(o)
    else:
        rows, vocab = data
        model = TinyBert(o, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    n = data.shape[0] if model_name == "char_lstm" else rows.shape[0]
    order = torch.randperm(n, generator=gen)
    rates = []
    for step in range(steps):
        start = time.perf_counter()
        idx = order[step * batch % (n - batch):][:batch]
        opt.zero_grad()
        if model_name == "char_lstm":
            x = data.index_select(0, idx)
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1))
        else:
            tokens = rows.index_select(0, idx)
            inputs, chosen = mask_tokens(tokens, vocab, gen)
            hidden = model(inputs)
            loss = F.cross_entropy(model.logits(hidden[chosen]), tokens[chosen])
        loss.backward()
        loss.item()
        opt.step()
        rates.append(batch / (time.perf_counter() - start))
    return rates


def run_cpp(trainer, model_name, config):
    config = dict({"seed": 0, "model": MODELS[model_name],
                   "dataset": {"validation_fraction": 0.05}}, **config)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(config, f)
        f.flush()
        out = subprocess.run([trainer, "--config", f.name], check=True,
                             capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def step_rates(rows):
    return [r["metrics"]["samples_per_second"] for r in rows
            if "samples_per_second" in r.get("metrics", {})]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", default=os.path.join(
        here, "..", "build", "worker", "trainer", "megabatch-trainer"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quality-steps", type=int, default=300)
    parser.add_argument("--only", choices=list(MODELS), help="one model only")
    parser.add_argument("--python-mallopt", action="store_true",
                        help="give the Python loop the trainer's malloc settings")
    args = parser.parse_args()
    if args.python_mallopt:
        keep_freed_memory()
    args.trainer = os.path.abspath(args.trainer)
    text = corpus_bytes()
    windows = text[:(text.shape[0] - 1) // 128 * 128 + 1].unfold(0, 129, 128).contiguous()
    data = {"char_lstm": windows,
            "tiny_bert": token_sequences(args.trainer, 128, MODELS["tiny_bert"]["vocab_size"])}
    print(f"threads: {args.threads}; AdamW; samples/s are medians over steps after "
          f"{args.warmup} warm-up step(s), {args.reps} alternating runs each; a sample is "
          f"128 characters (char_lstm) or 128 tokens (tiny_bert); Python malloc "
          f"{'as the trainer' if args.python_mallopt else 'default'}")
    print(f"{'model':9} {'batch':>6} {'C++ samples/s':>14} {'Python samples/s':>17} "
          f"{'C++ tokens/s':>13} {'C++/Python':>11}")
    for model_name, batch, steps in CASES:
        if args.only and model_name != args.only:
            continue
        cpp, py = [], []
        for _ in range(args.reps):
            rows = run_cpp(args.trainer, model_name,
                           {"optimizer": {"name": "adamw"}, "batch_size": batch, "lr": 1e-3,
                            "budget": {"steps": steps}, "eval_every_steps": 10 ** 9,
                            "threads": args.threads})
            cpp += step_rates(rows)[args.warmup:-1]  # the last step evaluates
            py += run_python(data[model_name], model_name, batch, steps,
                             args.threads)[args.warmup:-1]
        c, p = statistics.median(cpp), statistics.median(py)
        print(f"{model_name:9} {batch:>6} {c:>14.1f} {p:>17.1f} {c * 128:>13.0f} "
              f"{c / p:>11.3f}", flush=True)
    if args.quality_steps <= 0:
        return 0
    print(f"\nquality: LAMB (lr 0.01, weight decay 0.01), batch 64, {args.quality_steps} "
          f"steps, warmup 10% then linear decay; held-out 5% of the fortunes")
    for model_name, metric in (("char_lstm", "val_bpc"), ("tiny_bert", "val_mlm_accuracy")):
        if args.only and model_name != args.only:
            continue
        start = time.perf_counter()
        rows = run_cpp(args.trainer, model_name,
                       {"optimizer": {"name": "lamb", "weight_decay": 0.01},
                        "batch_size": 64, "lr": 0.01,
                        "schedule": {"warmup_steps": args.quality_steps // 10, "decay": "poly"},
                        "budget": {"steps": args.quality_steps},
                        "eval_every_steps": args.quality_steps, "threads": args.threads})
        wall = time.perf_counter() - start
        final = [r["metrics"] for r in rows if metric in r.get("metrics", {})][-1]
        print(f"{model_name:9} {metric} {final[metric]:.4f} (test_loss {final['test_loss']:.4f}, "
              f"{args.quality_steps * 64} samples, {wall:.0f} s wall)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
