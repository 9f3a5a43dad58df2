"""ONNX export: narrowed models of every kind export, and onnxruntime computes what PyTorch computes."""

import json

import pytest
import torch

from slimzip.cli import main
from slimzip.data import get_dataset_spec
from slimzip.deploy.onnx import check_onnx, to_onnx
from slimzip.models import create_model, get_model_entry
from slimzip.structured import ChannelPruner, widths

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ["lenet-5-bn", "dropnet-b", "vgg11", "resnet20", "densenet40", "preresnet164"])
def test_narrowed_models_export_and_onnxruntime_agrees(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    shape = get_dataset_spec(get_model_entry(name).dataset).image_shape
    before = sum(widths(model).values())
    narrow = ChannelPruner(importance="l1", channel_ratio=0.5, scope="layer").fit_transform(model, shape).eval()
    assert sum(widths(narrow).values()) < before
    check = check_onnx(narrow, to_onnx(narrow, shape), torch.randn(5, *shape))  # batch 5: the axis is dynamic
    assert check.images == 5 and check.max_rel_diff < 1e-4 and check.same_argmax == 1.0


def test_export_cli_writes_a_checked_file_and_refuses_bad_paths(capsys, data_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--model", "lenet-5-bn", "--epochs", "1", "--subset", "500", "--out", str(run),
                 "--quiet"]) == 0
    capsys.readouterr()
    narrow = tmp_path / "narrow"
    assert main(["prune-channels", str(run), "--ratio", "0.5", "--scope", "layer", "--method", "l1",
                 "--finetune-epochs", "0", "--out", str(narrow), "--quiet", "--json"]) == 0
    kept = next(iter(json.loads(capsys.readouterr().out)["after"]["widths"].values()))
    out = tmp_path / "m.onnx"
    assert main(["export", str(narrow), "--onnx", str(out), "--split", "test", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert main(["eval", str(narrow), "--json"]) == 0  # what PyTorch scores, onnxruntime scores (ties aside)
    assert r["check"]["accuracy"] == pytest.approx(json.loads(capsys.readouterr().out)["accuracy"], abs=2e-4)
    assert r["file_bytes"] == out.stat().st_size and r["check"]["max_abs_diff"] < 1e-3
    assert main(["export", str(narrow), "--onnx", str(out), "--check-images", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["check"]["images"] == 8  # random inputs without a split
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(out)).graph  # narrowed widths, and a batch axis of any size
    first = next(t for t in graph.initializer if len(t.dims) == 4)
    assert first.dims[0] == kept < 20 and graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for argv, message in (([str(narrow), "--onnx", str(tmp_path / "m.txt")], "must end in .onnx"),
                          ([str(tmp_path / "none.slz"), "--onnx", str(out)], "no such file"),
                          ([str(narrow), "--onnx", str(out), "--check-images", "0"], "must be at least 1")):
        try:
            code = main(["export", *argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
