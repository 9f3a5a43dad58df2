"""Entropy-constrained weight sharing (``--share-rate``) against plain k-means: the same checkpoint
compressed with the same fixed knobs once per rate, each file's bytes (and its codes' bytes), ratio and
the decoded file's test accuracy. With ``--run``, a finished search's winner instead: its pruned model
shared again at each rate with the winner's bits and the search's own centroid fine-tune (distillation
included), so that only the sharing differs.

Usage: python benchmarks/share_rate.py CHECKPOINT [--rates 0,0.01,0.02,0.04] [--knobs "..."]
       python benchmarks/share_rate.py --run RUN_DIR [--rates ...]   (RUN_DIR: a search's run directory)
writes benchmarks/results/share_rate_NAME.json and prints the table."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from slimzip.codec import decode_model, model_table
from slimzip.container import read_container
from slimzip.inspection import inspect_container
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
KNOBS = ("--channel-ratio 0.675 --channel-scope sensitivity --sparsity 0.956 --bits-conv 4 --bits-fc 4 "
         "--raw-dtype uint8")  # the first command's winner on its checkpoint (README), held fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--rates", default="0,0.01,0.02,0.04")
    parser.add_argument("--knobs", default=KNOBS, help="the fixed knobs, as compress options")
    parser.add_argument("--run", help="a finished search's run directory: re-share its winner instead")
    parser.add_argument("--out", default="runs/share_rate")
    args = parser.parse_args()
    if (args.checkpoint is None) == (args.run is None):
        parser.error("give a CHECKPOINT or --run RUN_DIR")
    name = Path(args.checkpoint).name if args.run is None else \
        "-".join(Path(args.run).resolve().parts[-2:]).removesuffix(".run")
    rates = [float(rate) for rate in args.rates.split(",")]
    rows = [_run(args, rate, ROOT / args.out / f"{name}-rate{rate}.slz") for rate in rates] if args.run is None \
        else _reshared(Path(args.run), rates, ROOT / args.out / name)
    print(f"{'share rate':>10} {'file B':>7} {'codes B':>7} {'ratio':>7} {'test':>7} {'seconds':>7}")
    for r in rows:
        print(f"{r['share_rate']:>10g} {r['file_bytes']:>7,} {r['codes_bytes']:>7,} {r['compression_ratio']:>7.1f} "
              f"{100 * r['test_accuracy']:>6.2f}% {r['cost']['wall_seconds']:>7.0f}")
    path = ROOT / "benchmarks" / "results" / f"share_rate_{name}.json"
    path.write_text(json.dumps({"machine": {"cpu": cpu_name()}, "checkpoint": args.checkpoint, "run": args.run,
                                "knobs": args.knobs if args.run is None else "the search winner's",
                                "command": "python benchmarks/share_rate.py " + " ".join(sys.argv[1:]),
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


def compress_fixed(checkpoint: str, knobs: str, out: Path, *flags: str) -> dict:
    """``slimzip compress CHECKPOINT KNOBS FLAGS --out OUT --json`` (fixed knobs): its JSON (file bytes, ratio,
    val / test accuracy of the decoded file, ``components``: the file's bytes by part, as ``slimzip inspect``
    counts them), plus ``wall_seconds``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "slimzip", "compress", checkpoint, *knobs.split(), *flags,
                           "--out", str(out), "--json", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          check=True)
    return {**json.loads(done.stdout), "wall_seconds": round(time.perf_counter() - t0, 1)}


def _run(args, rate: float, out: Path) -> dict:
    result = compress_fixed(args.checkpoint, args.knobs, out, "--share-rate", str(rate))
    return {"model": result.get("model"), "share_rate": rate, "file": str(out), "file_bytes": result["file_bytes"],
            "codes_bytes": result["components"]["codes"], "compression_ratio": result["compression_ratio"],
            "test_accuracy": result["test_accuracy"], "val_accuracy": result.get("val_accuracy"),
            "cost": {"wall_seconds": result["wall_seconds"]}}


def _reshared(run: Path, rates: list[float], work: Path) -> list[dict]:
    """The search in ``run``'s winner: the pruned candidate its file was shared from, shared again at each rate
    with the winner's bits, by the search's own candidate pipeline (its centroid fine-tune, distillation and
    file coding); each file decoded and scored on the test split."""
    import dataclasses
    import shutil
    import sqlite3

    import torch

    from slimzip.api.common import _file_data, resolve_device
    from slimzip.api.searching import _prepared
    from slimzip.codec import self_describing
    from slimzip.core import _input_shape
    from slimzip.models.user import is_user_source
    from slimzip.searcher import Journal, SearchConfig
    from slimzip.searcher.driver import artifact_name, candidate_bits, candidate_layer_bits
    from slimzip.searcher.pipeline import CandidatePipeline
    from slimzip.trainer import evaluate

    config = json.loads(sqlite3.connect(run / "journal.sqlite").execute(
        "SELECT value FROM meta WHERE name = 'config'").fetchone()[0])
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    cfg = SearchConfig(**{k: v for k, v in config["search"].items() if k in fields})
    journal = Journal(run / "journal.sqlite", config, {"search": dataclasses.asdict(SearchConfig())})
    summary = json.loads((run / "summary.json").read_text())
    by_id = {c.id: c for c in journal.all()}
    winner = by_id[summary["knobs"]["candidate"]]
    pruned = by_id[winner.parent]  # the model the winner's file was shared from
    bits, layers = candidate_bits(winner, cfg), tuple(sorted(candidate_layer_bits(winner).items()))
    journal.close()
    work.mkdir(parents=True, exist_ok=True)
    (work / "trunks").mkdir(exist_ok=True)
    for suffix in (".safetensors", ".json"):  # the pruned model, read where the pipeline looks for it
        shutil.copy(run / "trunks" / f"{artifact_name(pruned.key)}{suffix}", work / "trunks")
    dev = resolve_device("cpu")
    model, meta, train_cfg, loaders, full_train = _prepared(config["checkpoint"], cfg, dev, None)
    rows = []
    for rate in rates:
        t0 = time.perf_counter()
        pipeline = CandidatePipeline(model, None if is_user_source(meta["model"]["name"]) else meta["model"],
                                     _input_shape(loaders), loaders, train_cfg, dataclasses.replace(cfg, share_rate=rate),
                                     work, verbose=False, file_meta={"dataset": meta["dataset"], **_file_data(meta)},
                                     full_train=full_train)
        key = f"{pruned.key}:share{rate}"
        out = pipeline(pruned.knobs, pruned, key=key, epochs=0, rounds=0, centroid_epochs=cfg.centroid_epochs,
                       bits=bits, layer_bits=layers)
        path = pipeline.file_path(key)
        container = read_container(path)
        decoded = decode_model(container, None if self_describing(container.manifest) else model).to(dev)
        parts = inspect_container(container, model_table(container, decoded))["components"]
        with torch.no_grad():
            test = evaluate(decoded, loaders.test)[1]
        rows.append({"model": meta["model"]["name"], "share_rate": rate, "file": str(path),
                     "file_bytes": out["file_bytes"], "codes_bytes": parts["codes"],
                     "compression_ratio": summary["dense_fp32_bytes"] / out["file_bytes"], "test_accuracy": test,
                     "val_accuracy": out["val_accuracy"], "bits": list(bits), "layer_bits": dict(layers),
                     "winner_candidate": winner.id,
                     "cost": {"centroid_epochs": cfg.centroid_epochs, "wall_seconds": round(time.perf_counter() - t0, 1)}})
        print(f"rate {rate:g}: {out['file_bytes']:,} B, val {out['val_accuracy']:.4f}, test {test:.4f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
