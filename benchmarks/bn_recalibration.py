"""What a search screen sees: validation accuracy of a pruned model with no training, with the
BatchNorm statistics it was trained with and after re-estimating them (`slimzip.trainer.recalibrate_bn`)
on 2,048 training images, over a few channel ratios x weight sparsities, for both channel scopes.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/bn_recalibration.py CKPT [--images 2048]
Writes benchmarks/results/bn_recalibration_<model>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from slimzip.api.common import _checkpoint_loaders, _checkpoint_recipe
from slimzip.checkpoint import load_checkpoint
from slimzip.data import get_dataset_spec
from slimzip.structured import apply_plan, default_channel_pruner
from slimzip.trainer import evaluate, recalibrate_bn
from slimzip.unstructured import MagnitudePruner, apply_masks_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--ratios", default="0.1,0.2,0.4")
    parser.add_argument("--sparsities", default="0,0.75,0.875")
    args = parser.parse_args()
    model, meta = load_checkpoint(args.checkpoint, "cpu")
    loaders = _checkpoint_loaders(meta, _checkpoint_recipe(meta).batch_size, torch.device("cpu"), None, 0, None)
    shape = get_dataset_spec(meta["dataset"]).image_shape
    rows = []
    print(f"{'scope':>6} {'channels':>8} {'sparsity':>8} {'stale BN':>9} {'recalibrated':>12}")
    for scope in ("global", "layer"):
        for ratio in map(float, args.ratios.split(",")):
            narrowed = copy.deepcopy(model)
            narrowed = apply_plan(narrowed, default_channel_pruner(narrowed, ratio, scope).fit(narrowed, shape).plan_,
                                  shape)
            for sparsity in map(float, args.sparsities.split(",")):
                m = copy.deepcopy(narrowed)
                if sparsity:
                    apply_masks_(m, MagnitudePruner(sparsity=sparsity, scope="global").fit(m).masks_)
                stale = evaluate(m, loaders.val)[1]
                recalibrate_bn(m, loaders.train, args.images)
                fresh = evaluate(m, loaders.val)[1]
                rows.append({"scope": scope, "channel_ratio": ratio, "sparsity": sparsity, "stale": stale,
                             "recalibrated": fresh})
                print(f"{scope:>6} {ratio:>8g} {sparsity:>8g} {stale:>9.4f} {fresh:>12.4f}", flush=True)
    out = Path(__file__).parent / "results" / f"bn_recalibration_{meta['model']['name']}.json"
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "images": args.images, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
