"""Training throughput: slimzip's device-resident loader + loop against a plain DataLoader loop.

Same model, same data, same batch size, same optimizer, in one process. Each path makes one warm-up
pass (it holds torch.compile's one-off compile time, reported as "first pass"), then ``--repeats``
timed passes over the same training images, round-robin across paths so that machine noise hits them
alike; the table gives the median. A pass includes a DataLoader's worker start-up, which a user pays
every epoch.

Rows:
  dataloader-w0   torch DataLoader, per-image Dataset (uint8 -> float, normalise, pad-4 crop + flip
                  for CIFAR, as torchvision's transforms do), num_workers=0, NCHW fp32 step
  dataloader-w2   the same with num_workers=2
  dataloader-cl   the same as w0 but with slimzip's step settings (channels_last), to separate what
                  the loader gains from what the step settings gain
  slimzip         slimzip.data.DeviceLoader + slimzip.trainer.fit (precision 'auto', channels_last)
  slimzip-compile the same with TrainConfig(compile=True) (NCHW)

With ``--precision-table`` it measures instead what this machine can train (issue: CIFAR-10 on the CPU):
slimzip's loader and loop only, fp32 against bf16 autocast, for the CIFAR-10 models of the paper's
experiment, and the time one epoch of the 45,000 training images would take at that rate.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/train_throughput.py [--quick]
       SLIMZIP_DATA=../shared/data python benchmarks/train_throughput.py --precision-table
Writes benchmarks/results/train_throughput.json (or train_throughput_cifar.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from slimzip.data import create_loaders, get_dataset_spec, load_arrays, stratified_split
from slimzip.models import create_model
from slimzip.trainer import TrainConfig, fit, use_bf16
from machine import cpu_name  # benchmarks/machine.py

CASES = [("lenet-5", "mnist", 12800), ("resnet20", "cifar10", 2560)]  # model, dataset, images per pass
# --precision-table: the paper's CIFAR-10 models, images per timed pass (a few seconds to ~20 s each)
CIFAR_CASES = [("resnet20", 2560), ("resnet56", 1024), ("vgg11", 1024), ("vgg19", 512), ("densenet40", 512)]
CIFAR_TRAIN_IMAGES = 45000  # CIFAR-10's training split after slimzip's 5,000-image validation split
BATCH = 128


class PerImageDataset(Dataset):
    """What a typical training script does: one image at a time, transforms in Python."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: tuple, std: tuple, augment: bool):
        self.x, self.y, self.augment = x, y, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(self.x[i]).float().div(255)
        if self.augment:
            img = F.pad(img, (4, 4, 4, 4))
            dy, dx = np.random.randint(0, 9, size=2)
            img = img[:, dy:dy + self.x.shape[2], dx:dx + self.x.shape[3]]
            if np.random.rand() < 0.5:
                img = img.flip(2)
        return (img - self.mean) / self.std, int(self.y[i])


def dataloader_runner(model_name: str, dataset: str, images: int, workers: int, channels_last: bool):
    """A plain training script: per-image Dataset, torch DataLoader, eager fp32 step."""
    spec = get_dataset_spec(dataset)
    arrays = load_arrays(dataset)
    idx = stratified_split(arrays.train_y, spec.val_size)[0][:images]
    ds = PerImageDataset(arrays.train_x[idx], arrays.train_y[idx], spec.mean, spec.std, spec.augment)
    torch.manual_seed(0)
    model = create_model(model_name)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def one_pass() -> int:
        loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)
        model.train()
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(loader) * BATCH

    return one_pass


def slimzip_runner(model_name: str, dataset: str, images: int, compile: bool, precision: str = "auto"):
    """slimzip's DeviceLoader + fit, with its defaults (precision 'auto', channels_last)."""
    loaders = create_loaders(dataset, batch_size=BATCH, subset=images)
    torch.manual_seed(0)
    model = create_model(model_name)
    # Compiled graphs run NCHW here: on this CPU channels_last + compile measured slower than NCHW + compile.
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, weight_decay=5e-4, schedule="constant",
                      compile=compile, channels_last=not compile, precision=precision)

    def one_pass() -> int:
        fit(model, loaders.train, None, cfg, verbose=False)
        return len(loaders.train) * BATCH

    return one_pass


def measure_rows(runners: dict, repeats: int) -> dict:
    """Warm-up pass per row (compile, worker start), then ``repeats`` timed passes, round-robin."""
    warmup, rates = {}, {name: [] for name in runners}
    for name, one_pass in runners.items():
        t0 = time.perf_counter()
        one_pass()
        warmup[name] = time.perf_counter() - t0
    for _ in range(repeats):
        for name, one_pass in runners.items():
            t0 = time.perf_counter()
            n = one_pass()
            rates[name].append(n / (time.perf_counter() - t0))
    return {name: {"images_per_s": float(np.median(r)), "all": [round(v, 1) for v in r],
                   "first_pass_s": round(warmup[name], 1)} for name, r in rates.items()}


def precision_table(repeats: int, quick: bool) -> tuple[list[dict], str]:
    """fp32 against bf16 autocast per CIFAR-10 model, slimzip's loader and loop."""
    bf16 = use_bf16("auto", torch.device("cpu"))
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)  # bf16 autocast without native bf16 is emulated: slow
    rows = []
    for model_name, images in CIFAR_CASES:
        images = max(BATCH, images // 4) if quick else images
        runners = {p: slimzip_runner(model_name, "cifar10", images, compile=False, precision=p) for p in precisions}
        for p, r in measure_rows(runners, repeats).items():
            rows.append({"model": model_name, "dataset": "cifar10", "precision": p, "images": images, **r,
                         "epoch_s": round(CIFAR_TRAIN_IMAGES / r["images_per_s"], 1)})
    lines = [f"{'model':10} {'precision':9} {'images/s':>9} {'s/epoch (45k)':>14}  timed passes"]
    lines += [f"{r['model']:10} {r['precision']:9} {r['images_per_s']:>9.1f} {r['epoch_s']:>14.1f}  {r['all']}"
              for r in rows]
    return rows, "\n".join(lines)


def loader_table(repeats: int, quick: bool) -> tuple[list[dict], str]:
    """slimzip's loader + loop against DataLoader loops, per CASES row."""
    rows = []
    for model_name, dataset, images in CASES:
        images = images // 4 if quick else images
        runners = {
            "dataloader-w0": dataloader_runner(model_name, dataset, images, 0, False),
            "dataloader-w2": dataloader_runner(model_name, dataset, images, 2, False),
            "dataloader-cl": dataloader_runner(model_name, dataset, images, 0, True),
            "slimzip": slimzip_runner(model_name, dataset, images, compile=False),
            "slimzip-compile": slimzip_runner(model_name, dataset, images, compile=True),
        }
        result = measure_rows(runners, repeats)
        base = result["dataloader-w0"]["images_per_s"]
        for name, r in result.items():
            rows.append({"model": model_name, "dataset": dataset, "loader": name, "images": images,
                         **r, "speedup_vs_dataloader_w0": round(r["images_per_s"] / base, 2)})
    lines = [f"{'model':10} {'dataset':8} {'path':16} {'images/s':>9} {'vs w0':>7} {'first pass':>11}  timed passes"]
    lines += [f"{r['model']:10} {r['dataset']:8} {r['loader']:16} {r['images_per_s']:>9.1f} "
              f"{r['speedup_vs_dataloader_w0']:>6.2f}x {r['first_pass_s']:>10.1f}s  {r['all']}" for r in rows]
    return rows, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the images, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision-table", action="store_true",
                        help="fp32 vs bf16 images/s of the CIFAR-10 models (slimzip's loop only)")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/train_throughput[_cifar].json)")
    args = parser.parse_args()
    name = "train_throughput_cifar.json" if args.precision_table else "train_throughput.json"
    args.out = args.out or str(Path(__file__).parent / "results" / name)
    repeats = 1 if args.quick else args.repeats
    rows, table = (precision_table if args.precision_table else loader_table)(repeats, args.quick)
    print(table)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(),
            "bf16": use_bf16("auto", torch.device("cpu")), "batch_size": BATCH,
            "repeats": repeats, "statistic": "median images/s of the timed passes"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
