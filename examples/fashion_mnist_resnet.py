#!/usr/bin/python3
"""Exports a small ResNet for Fashion-MNIST and the dataset as .npy files:
what a study of your own model starts from (docs/models.md).

    /usr/bin/python3 examples/fashion_mnist_resnet.py OUT_DIR [--width 16]

writes OUT_DIR/model.pt (torch.jit.script; its weights are every trial's
initial weights) and OUT_DIR/{train,val,test}_{x,y}.npy: Debian's
dataset-fashion-mnist as uint8 images [N, 1, 28, 28] (the model scales
them) and int64 labels; the last 5,000 training images are the validation
split, as for the built-in models. A spec then names them:

    model: {type: torchscript, path: OUT_DIR/model.pt}
    dataset:
      kind: classification
      train: {x: OUT_DIR/train_x.npy, y: OUT_DIR/train_y.npy}
      val:   {x: OUT_DIR/val_x.npy,   y: OUT_DIR/val_y.npy}
      test:  {x: OUT_DIR/test_x.npy,  y: OUT_DIR/test_y.npy}
"""
import argparse
import gzip
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
VALIDATION = 5000


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, three blocks (the last two halve the image), global average
    pooling and a linear classifier: uint8 images in, 10 logits out."""

    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(
            Block(width, width, 1), Block(width, 2 * width, 2),
            Block(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x):
        x = (x / 255.0 - 0.2860) / 0.3530  # Fashion-MNIST's mean and std
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


def read_idx(name):
    with gzip.open(os.path.join(FASHION_MNIST, name)) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out')
    parser.add_argument('--width', type=int, default=16)
    parser.add_argument('--rows', type=int, default=0,
                        help='keep only this many training images (tests)')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(ResNet(args.width)),
                   os.path.join(args.out, 'model.pt'))
    images = read_idx('train-images-idx3-ubyte.gz')[:, None]
    labels = read_idx('train-labels-idx1-ubyte.gz').astype(np.int64)
    if args.rows:
        images, labels = images[:args.rows + VALIDATION], labels[:args.rows + VALIDATION]
    splits = {
        'train': (images[:-VALIDATION], labels[:-VALIDATION]),
        'val': (images[-VALIDATION:], labels[-VALIDATION:]),
        'test': (read_idx('t10k-images-idx3-ubyte.gz')[:, None],
                 read_idx('t10k-labels-idx1-ubyte.gz').astype(np.int64)),
    }
    for split, (x, y) in splits.items():
        np.save(os.path.join(args.out, split + '_x.npy'), np.ascontiguousarray(x))
        np.save(os.path.join(args.out, split + '_y.npy'), y)
    print(f'{args.out}: model.pt and {sum(len(y) for _, y in splits.values())} images')


if __name__ == '__main__':
    main()
