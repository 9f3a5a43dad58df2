"""Bring your own model, from Python: a MobileNet-V2 defined in a user's file (examples/mobilenet_cifar.py),
trained on a CIFAR-10 subset, then searched to a target accuracy; the .slz file needs none of this code.

    SLIMZIP_DATA=../shared/data python examples/byo_model.py --train-images 5000 --epochs 15 --out runs/byo.slz

then, in a fresh process that never imports the model's file:

    slimzip eval runs/byo.slz --dataset cifar10

(the tensors below are normalised with CIFAR-10's mean / std, as `--dataset cifar10` does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import slimzip
from slimzip.data import get_dataset_spec, load_arrays, stratified_split
from slimzip.searcher import SearchConfig

sys.path.insert(0, str(Path(__file__).parent))
from mobilenet_cifar import mobilenet_v2  # noqa: E402 - the user's own code


def tensors(x, y, spec) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (torch.from_numpy(x).float() / 255 - mean) / std, torch.from_numpy(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--max-drop", type=float, default=2.0, help="points of val accuracy the file may lose")
    p.add_argument("--strategy", default="frontier")
    p.add_argument("--out", default="runs/byo.slz")
    args = p.parse_args()
    spec, a = get_dataset_spec("cifar10"), load_arrays("cifar10")
    train_idx, val_idx = stratified_split(a.train_y, spec.val_size)  # slimzip's fixed 5,000-image val split
    train = tensors(a.train_x[train_idx[:args.train_images]], a.train_y[train_idx[:args.train_images]], spec)
    val = tensors(a.train_x[val_idx], a.train_y[val_idx], spec)
    test = tensors(a.test_x, a.test_y, spec)

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = slimzip.train(mobilenet_v2(10), train, val, epochs=args.epochs, lr=0.05, weight_decay=5e-4,
                          schedule="cosine", bn_l1=1e-4, augment=True, run_dir=Path(args.out).with_suffix(".train"))
    trained = time.perf_counter() - t0
    result = slimzip.search(model, train, val, test, max_drop=args.max_drop,
                            config=SearchConfig(strategy=args.strategy), out=args.out,
                            run_dir=Path(args.out).with_suffix(".run"))
    summary = {**result.summary(), "train_seconds": trained, "train_images": len(train[1])}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
