"""Write CIFAR-10 or MNIST images into class folders of PNG files (an `imagefolder:DIR` dataset).

    python examples/make_imagefolder.py --dataset cifar10 --per-class 500 --out runs/cifar-png

writes DIR/train/<class>/*.png (the first N training images of each class), DIR/val/<class>/*.png (the
next N // 5) and DIR/test/<class>/*.png (the first N // 5 test images of each class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from slimzip.data import load_arrays

CLASSES = {"cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
           "mnist": [str(i) for i in range(10)]}


def write(x: np.ndarray, y: np.ndarray, folder: Path, names: list[str], start: int, count: int) -> int:
    written = 0
    for c, name in enumerate(names):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(y == c)[start:start + count]:
            image = x[i].transpose(1, 2, 0)
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(folder / name / f"{i:05d}.png")
            written += 1
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(CLASSES), default="cifar10")
    p.add_argument("--per-class", type=int, default=500, help="training images per class")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    a = load_arrays(args.dataset)
    out, n, names = Path(args.out), args.per_class, CLASSES[args.dataset]
    counts = [write(a.train_x, a.train_y, out / "train", names, 0, n),
              write(a.train_x, a.train_y, out / "val", names, n, max(n // 5, 1)),
              write(a.test_x, a.test_y, out / "test", names, 0, max(n // 5, 1))]
    print(f"{out}: {counts[0]} train, {counts[1]} val, {counts[2]} test images in {len(names)} classes")


if __name__ == "__main__":
    main()
