"""CNN families from torchvision and timm through slimzip's public API, each in its own process (a native
crash or a hang is recorded, not fatal), at random init on 32x32 images of 4 classes:

  trace       seconds to describe the model as a .slz graph (or why it cannot be);
  exact       channel ratio 0.3 asked vs removed, and max |narrowed - zeroed reference| (relative);
  compress    ``slimzip.compress`` at channel ratio 0.25, sparsity 0.5: ok / one-line refusal / raw exception;
  graph       whether the file holds its graph (loads without the model's code);
  reload      max |output of the file loaded in a fresh process - output in this one| (relative);
  search      ``slimzip.search`` (frontier, 1-epoch budget) ok / refusal / raw exception.

Needs timm and torchvision beside the CPU torch build, installed without their dependencies (they would
replace torch with a CUDA build):  pip install --no-deps timm torchvision && pip install pyyaml
huggingface_hub pillow  (a torchvision built for another torch imports through
``slimzip.models.user.import_torchvision``).

Usage: python benchmarks/model_zoo.py [--families a,b] [--timeout 300]; writes
benchmarks/results/model_zoo.json and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

FAMILIES = {  # name -> (library, constructor); patterns noted where a family carries one
    "tv:resnet18": ("torchvision", "resnet18"), "tv:resnext50_32x4d": ("torchvision", "resnext50_32x4d"),
    "tv:wide_resnet50_2": ("torchvision", "wide_resnet50_2"), "tv:mobilenet_v2": ("torchvision", "mobilenet_v2"),
    "tv:mobilenet_v3_small": ("torchvision", "mobilenet_v3_small"),  # SE, hardswish
    "tv:efficientnet_b0": ("torchvision", "efficientnet_b0"),  # stochastic depth
    "tv:regnet_y_400mf": ("torchvision", "regnet_y_400mf"), "tv:regnet_x_400mf": ("torchvision", "regnet_x_400mf"),
    "tv:shufflenet_v2_x0_5": ("torchvision", "shufflenet_v2_x0_5"),  # channel shuffle
    "tv:squeezenet1_1": ("torchvision", "squeezenet1_1"), "tv:densenet121": ("torchvision", "densenet121"),
    "tv:mnasnet0_5": ("torchvision", "mnasnet0_5"),  # versioned state dict
    "tv:vgg11_bn": ("torchvision", "vgg11_bn"), "tv:convnext_tiny": ("torchvision", "convnext_tiny"),  # LayerNorm
    "timm:resnet18d": ("timm", "resnet18d"), "timm:seresnet18": ("timm", "seresnet18"),
    "timm:efficientnet_b0": ("timm", "efficientnet_b0"), "timm:mobilenetv3_small_100": ("timm", "mobilenetv3_small_100"),
    "timm:regnety_002": ("timm", "regnety_002"), "timm:cspresnet50": ("timm", "cspresnet50"),  # cross-stage partial
    "timm:ghostnet_100": ("timm", "ghostnet_100"), "timm:rexnet_100": ("timm", "rexnet_100"),
    "timm:dla34": ("timm", "dla34"), "timm:repvgg_a0": ("timm", "repvgg_a0"),  # 1x1 stride-2 conv
    "timm:nf_resnet26": ("timm", "nf_resnet26"),  # weight-standardised conv with a gain
    "timm:mixnet_s": ("timm", "mixnet_s"), "timm:lcnet_050": ("timm", "lcnet_050"),
    "timm:hrnet_w18_small": ("timm", "hrnet_w18_small"), "timm:res2net50_14w_8s": ("timm", "res2net50_14w_8s"),
    "timm:resnest14d": ("timm", "resnest14d"), "timm:selecsls42b": ("timm", "selecsls42b"),
    "timm:ese_vovnet19b_dw": ("timm", "ese_vovnet19b_dw"), "timm:mobilevit_xxs": ("timm", "mobilevit_xxs"),
}
SHAPE = (3, 32, 32)
CLASSES = 4


def build(family: str):
    library, name = FAMILIES[family]
    if library == "torchvision":
        from slimzip.models.user import import_torchvision
        return getattr(import_torchvision().models, name)(num_classes=CLASSES)
    from slimzip.models.user import create_user_model
    return create_user_model(f"timm:{name}", num_classes=CLASSES)


def _data(n: int, seed: int):
    import torch
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.rand(n, *SHAPE, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 0.5
    return x, y


def _outcome(fn) -> tuple[str, str]:
    """('ok', '') / ('refused', the one line) / ('raw', exception type and message)."""
    from slimzip.errors import SlimzipError
    try:
        fn()
        return "ok", ""
    except SlimzipError as e:
        return "refused", str(e).splitlines()[0][:200]
    except Exception as e:  # what the table counts as a raw exception
        return "raw", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def one(family: str, work: Path) -> dict:
    """Every check on one family (run in a child process)."""
    import torch
    import slimzip
    from slimzip.codec import self_describing
    from slimzip.container import read_container
    from slimzip.graph import describe
    from slimzip.searcher import SearchConfig
    from slimzip.structured import ChannelPruner, apply_plan, zero_channels_hooks

    torch.manual_seed(0)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    row: dict = {"family": family}
    model = build(family).eval()
    row["params"] = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    row["trace"], row["trace_error"] = _outcome(lambda: describe(copy.deepcopy(model), SHAPE))
    row["trace_seconds"] = round(time.perf_counter() - t0, 2)
    x = torch.rand(2, *SHAPE)

    def exact():
        pruner = ChannelPruner(channel_ratio=0.3).fit(copy.deepcopy(model), SHAPE)
        total = sum(len(s) for s in pruner.scores_.values())
        row["channels_asked"] = round(0.3 * total, 1)
        row["channels_removed"] = total - sum(len(k) for k in pruner.plan_.values())
        row["groups"] = len(pruner.plan_)
        reference = copy.deepcopy(model)
        zero_channels_hooks(reference, pruner.plan_, SHAPE)
        want = reference(x)
        got = apply_plan(copy.deepcopy(model), pruner.plan_, SHAPE).eval()(x)
        row["exact_diff"] = float((got - want).abs().max() / (1 + want.abs().max()))
    row["exact"], row["exact_error"] = _outcome(exact)
    path = work / "m.slz"
    result = {}

    def compress():
        result["r"] = slimzip.compress(copy.deepcopy(model).train(), _data(128, 0), _data(64, 1), channel_ratio=0.25,
                                       sparsity=0.5, epochs=0.1, prune_steps=1, out=path, verbose=False)
    row["compress"], row["compress_error"] = _outcome(compress)
    if row["compress"] == "ok":
        r = result["r"]
        row["file_bytes"], row["ratio"] = r.file_bytes, round(r.compression_ratio, 1)
        row["graph"] = self_describing(read_container(path).manifest)
        torch.save(x, work / "x.pt")
        want = r.model.eval()(x).detach()
        if row["graph"]:
            code = (f"import torch, slimzip; m = slimzip.load({str(path)!r}); "
                    f"torch.save(m(torch.load({str(work / 'x.pt')!r})).detach(), {str(work / 'y.pt')!r})")
            run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, timeout=300)
            if run.returncode == 0:
                got = torch.load(work / "y.pt")
                row["reload_diff"] = float((got - want).abs().max() / (1 + want.abs().max()))
            else:
                row["reload_error"] = run.stderr.strip().splitlines()[-1][:200] if run.stderr.strip() else "crash"
        else:
            got = slimzip.load(path, model=copy.deepcopy(model))(x).detach()
            row["reload_diff_with_class"] = float((got - want).abs().max() / (1 + want.abs().max()))
    cfg = SearchConfig(strategy="frontier", step=0.5, refine=0, short_epochs=0.0, min_bits=0, centroid_epochs=0,
                       max_epochs=1.0, calibration_images=64)
    row["search"], row["search_error"] = _outcome(lambda: slimzip.search(
        copy.deepcopy(model).train(), _data(128, 0), _data(64, 1), max_drop=50.0, config=cfg, verbose=False))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=None, help="comma-separated (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per family")
    parser.add_argument("--resume", action="store_true", help="keep the rows of --out and run the other families")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "model_zoo.json"))
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print("ROW " + json.dumps(one(args.one, Path(tmp))))
        return
    families = args.families.split(",") if args.families else list(FAMILIES)
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if args.resume and out.is_file() else []
    done = {r["family"] for r in rows}
    for family in [f for f in families if f not in done]:
        t0 = time.perf_counter()
        try:
            run = subprocess.run([sys.executable, __file__, "--one", family], capture_output=True, text=True,
                                 timeout=args.timeout)
            found = [line[4:] for line in run.stdout.splitlines() if line.startswith("ROW ")]
            row = json.loads(found[-1]) if found else {
                "family": family, "crash": f"exit {run.returncode}: "
                + (run.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        except subprocess.TimeoutExpired:
            row = {"family": family, "crash": f"hang: no result in {args.timeout} s"}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(_line(row), flush=True)
        _write(Path(args.out), rows, families)  # after every family: a stopped run keeps what it measured
    print(json.dumps(_summary(rows), indent=2))


def _write(out: Path, rows: list[dict], families: list[str]) -> None:
    payload = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                           "python": platform.python_version()}, "shape": SHAPE, "asked": len(families),
               "summary": _summary(rows), "rows": rows}
    out.write_text(json.dumps(payload, indent=2) + "\n")


def _line(r: dict) -> str:
    if "crash" in r:
        return f"{r['family']:<26} CRASH {r['crash']}"
    return (f"{r['family']:<26} trace {r['trace']:<7} {r['trace_seconds']:>6.1f}s  exact {r['exact']:<7} "
            f"{r.get('exact_diff', float('nan')):.1e} removed {r.get('channels_removed', '-')}/{r.get('channels_asked', '-')}"
            f"  compress {r['compress']:<7} graph {r.get('graph', '-')!s:<5} reload "
            f"{r.get('reload_diff', r.get('reload_diff_with_class', float('nan'))):.1e}  search {r['search']:<7} "
            f"{r['seconds']:.0f}s  {(r.get('compress_error') or r.get('trace_error') or '')[:80]}")


def _summary(rows: list[dict]) -> dict:
    ran = [r for r in rows if "crash" not in r]
    ok = [r for r in ran if r["compress"] == "ok"]
    raw = sum(r[k] == "raw" for r in ran for k in ("trace", "exact", "compress", "search"))
    return {"families": len(rows), "crashes": len(rows) - len(ran), "compress_ok": len(ok),
            "compress_refused": sum(r["compress"] == "refused" for r in ran), "hold_graph": sum(r["graph"] for r in ok),
            "raw_exceptions": raw, "search_ok": sum(r["search"] == "ok" for r in ran),
            "max_reload_diff": max((r.get("reload_diff", 0.0) for r in ok), default=None),
            "max_exact_diff": max((r.get("exact_diff", 0.0) for r in ran), default=None)}


if __name__ == "__main__":
    main()
