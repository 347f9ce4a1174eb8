#!/usr/bin/python3
"""Exports a small GPT-style language model and a token file: a language
model study of your own model (docs/models.md).

    /usr/bin/python3 examples/gpt_tokens.py OUT_DIR [--layers 2 --width 128]

writes OUT_DIR/model.pt (torch.jit.script: causal self-attention blocks,
forward(tokens[N, T]) -> logits[N, T, 256]; its weights are every trial's
initial weights) and OUT_DIR/{train,val}.bin: the text of Debian's
`fortunes` package (/usr/share/games/fortunes, the files without an
extension) as flat uint16 byte tokens, the last 5% held out for validation.
A spec then names them:

    model: {type: torchscript, path: OUT_DIR/model.pt}
    dataset:
      kind: language_model
      train: {tokens: OUT_DIR/train.bin}
      val:   {tokens: OUT_DIR/val.bin}
      dtype: uint16
      seq_len: 64          # at most --context
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CORPUS = '/usr/share/games/fortunes'
VOCAB = 256  # bytes


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x, mask):
        n, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q = q.view(n, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(n, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(n, t, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        att = att.masked_fill(mask[:t, :t], float('-inf')).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(n, t, c)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class Gpt(nn.Module):
    def __init__(self, layers: int, width: int, heads: int, context: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        self.register_buffer(
            'mask', torch.triu(torch.ones(context, context, dtype=torch.bool), 1))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.size(1)]
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln(x))


def corpus_bytes():
    text = b''
    for name in sorted(os.listdir(CORPUS)):
        path = os.path.join(CORPUS, name)
        if os.path.isfile(path) and '.' not in name:
            with open(path, 'rb') as f:
                text += f.read()
    return np.frombuffer(text, np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out')
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument('--context', type=int, default=128)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    model = Gpt(args.layers, args.width, args.heads, args.context)
    torch.jit.save(torch.jit.script(model), os.path.join(args.out, 'model.pt'))
    tokens = corpus_bytes().astype(np.uint16)
    held = len(tokens) // 20
    tokens[:-held].tofile(os.path.join(args.out, 'train.bin'))
    tokens[-held:].tofile(os.path.join(args.out, 'val.bin'))
    params = sum(p.numel() for p in model.parameters())
    print(f'{args.out}: model.pt ({params} parameters), '
          f'{len(tokens) - held} training and {held} validation tokens')


if __name__ == '__main__':
    main()
