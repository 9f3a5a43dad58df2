"""Where the bytes of a small file go, and what each lever saves: the same checkpoint and knobs compressed
once per codebook size, each result written as .slz version 3 (keyed manifest, float32 codebooks of
2**bits entries), version 4 (compact manifest, the used centroids only, float16) and version 4 with the
small tensors (BN scale / shift, biases) as 8-bit affine instead of float16.

The rows separate the levers on the same model: version 3 -> 4 at the same bits (the container), 8/5 ->
4/4 -> 3/3 bits (smaller codebooks and codes, after centroid fine-tuning). Accuracy is measured on the
model decoded from each file (val, and test once per file).

Usage: SLIMZIP_DATA=../shared/data python benchmarks/file_levers.py runs/lenet-5-bn \\
           [--channel-ratio 0.675 --channel-scope layer --sparsity 0.925 --scope global] [--bits 8/5,4/4,3/3]
Writes benchmarks/results/file_levers_NAME.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from slimzip.api.common import _checkpoint_loaders, _checkpoint_recipe, _file_data
from slimzip.checkpoint import load_checkpoint
from slimzip.codec import decode_model, encode_model, file_model, model_table
from slimzip.container import decode_container
from slimzip.data import get_dataset_spec
from slimzip.deep_compression import (CompressConfig, prune_and_retrain, profile, remove_dead_units,
                                      share_weights)
from slimzip.progress import log
from slimzip.schedule import sparsity_steps
from slimzip.structured import apply_plan, default_channel_pruner, sensitivity_pruner
from slimzip.trainer import TrainConfig, fit
from slimzip.unstructured import Masks, mask_hook
from slimzip.data import DeviceLoader
from slimzip.sharing import SharedLayer
from slimzip.inspection import inspect_container
from slimzip.measure import dense_fp32_bytes
from slimzip.trainer import evaluate


@dataclass
class Compressed:
    """What ``compress`` produced besides the (narrowed, shared) model itself."""

    model: nn.Module
    layers: dict[str, SharedLayer]
    plan: dict[str, list[int]]  # channels removed (the ratio, then dead units), relative to the input model
    epochs: int


def compress(model: nn.Module, train: DeviceLoader, val: DeviceLoader | None, cfg: CompressConfig,
                  train_cfg: TrainConfig, input_shape: tuple[int, ...], verbose: bool = True) -> Compressed:
    """The pieces slimzip.compress runs, kept apart so each file version can be written from one model: remove channels (``channel_ratio``), prune weights and retrain, remove dead units, share weights,
    fine-tune centroids, with fixed knobs (``prune_and_retrain``). Retraining keeps the checkpoint's own
    recipe (its L1 penalty included) at ``cfg.lr``. ``model`` may be replaced: use the returned model."""
    cfg.validate()

    def tune_cfg(epochs: int) -> TrainConfig:
        return dataclasses.replace(train_cfg, epochs=epochs, lr=cfg.lr, schedule="cosine", patience=0)

    def tune(m: nn.Module, masks: "Masks | None") -> float:
        if cfg.retrain_epochs:
            fit(m, train, val, tune_cfg(cfg.retrain_epochs), after_step=[mask_hook(masks)] if masks else [],
                verbose=verbose)
        return cfg.retrain_epochs

    def remove_channels(m: nn.Module) -> tuple[nn.Module, dict]:
        if cfg.channel_scope == "sensitivity":
            pruner = sensitivity_pruner(default_channel_pruner(m, 0.0, "layer"), profile(m, train, val, input_shape),
                                        cfg.channel_ratio)
        else:
            pruner = default_channel_pruner(m, cfg.channel_ratio, cfg.channel_scope)
        plan = pruner.fit(m, input_shape).plan_
        log(f"removed {cfg.channel_ratio:.0%} of channels ({pruner.importance}, {pruner.scope})", verbose=verbose)
        return apply_plan(m, plan, input_shape), plan

    pruned = prune_and_retrain(model, {}, None, remove_channels=remove_channels if cfg.channel_ratio > 0 else None,
                               sparsities=sparsity_steps(0.0, cfg.sparsity, cfg.prune_steps), scope=cfg.scope,
                               tune=tune, verbose=verbose)
    pruned = remove_dead_units(pruned, input_shape, verbose)
    layers = share_weights(pruned.model, pruned.masks, cfg.bits_conv, cfg.bits_fc, tune_cfg(cfg.centroid_epochs),
                           train, val, grad=cfg.centroid_grad, verbose=verbose)
    return Compressed(pruned.model, layers, pruned.plan, int(pruned.epochs) + cfg.centroid_epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--channel-ratio", type=float, default=0.675)
    p.add_argument("--channel-scope", default="layer")
    p.add_argument("--sparsity", type=float, default=0.925)
    p.add_argument("--scope", default="global")
    p.add_argument("--bits", default="8/5,4/4,3/3", help="conv/fc codebook bits per run, comma-separated")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    model, meta = load_checkpoint(args.checkpoint, torch.device("cpu"))
    shape = get_dataset_spec(meta["dataset"]).image_shape
    train_cfg = _checkpoint_recipe(meta)
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, torch.device("cpu"), None, train_cfg.seed)
    dense = dense_fp32_bytes(model)
    rows = []
    for pair in args.bits.split(","):
        conv, fc = (int(b) for b in pair.split("/"))
        cfg = CompressConfig(channel_ratio=args.channel_ratio, channel_scope=args.channel_scope, sparsity=args.sparsity,
                             scope=args.scope, bits_conv=conv, bits_fc=fc)
        t0 = time.perf_counter()
        result = compress(copy.deepcopy(model), loaders.train, loaders.val, cfg, train_cfg, shape, verbose=False)
        seconds = time.perf_counter() - t0
        shared, spec = file_model(result.model.cpu(), meta["model"], result.plan, shape)
        for version, raw in ((3, "float16"), (4, "float16"), (4, "uint8")):
            blob = encode_model(shared, spec, result.layers, dataclasses.replace(cfg, raw_dtype=raw),
                                {"dataset": meta["dataset"], **_file_data(meta)}, version=version)
            container = decode_container(blob)
            decoded = decode_model(container).eval()
            parts = inspect_container(container, model_table(container, decoded))["components"]
            rows.append({"bits": pair, "version": version, "raw": raw, "file_bytes": len(blob), "ratio": dense / len(blob),
                         "val_accuracy": evaluate(decoded, loaders.val)[1],
                         "test_accuracy": evaluate(decoded, loaders.test)[1], "components": parts,
                         "pipeline_seconds": round(seconds, 1)})
            r = rows[-1]
            print(f"bits {pair:5} v{version} {raw:7}: {r['file_bytes']:>7,} B {r['ratio']:>6.1f}x  val {r['val_accuracy']:.4f} "
                  f"test {r['test_accuracy']:.4f}  " + " ".join(f"{k} {v}" for k, v in parts.items()), flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / f"file_levers_{Path(args.checkpoint).name}.json")
    meta_out = {"checkpoint": str(args.checkpoint), "knobs": vars(args), "dense_fp32_bytes": dense,
                "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    out.write_text(json.dumps({"meta": meta_out, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
