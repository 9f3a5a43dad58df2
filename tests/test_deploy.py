"""Deployment: .slz files as C99 (compressed weights kept, compiled -Werror, run, compared with PyTorch) and
as int8 ONNX; the operators the C backend covers, and its one-line refusals."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import slimzip
from slimzip.cli import main
from slimzip.deploy import cbuild
from slimzip.deploy.cgen import generate, pack_bits
from slimzip.deploy.lower import UnsupportedOperator, lower
from slimzip.deploy.stored import Stream
from slimzip.graph import traced

sys.path.insert(0, str(Path(__file__).parent))
from foreign import FOREIGN  # noqa: E402

CORPUS = Path(__file__).parent / "corpus" / "valid"
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
SHAPE = (3, 16, 16)


class EveryOperator(nn.Module):
    """Grouped, depthwise, strided, dilated and 'same' convs, unfolded BatchNorm, every activation, SE-style
    broadcast multiply, residual add, concat, each pooling kind, mean, flatten, linear, BatchNorm1d."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.group = nn.Conv2d(8, 8, 3, padding="same", groups=2)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU6(), nn.Conv2d(4, 8, 1),
                                nn.Hardsigmoid())
        self.acts = nn.ModuleList([nn.Hardswish(), nn.SiLU(), nn.LeakyReLU(0.1), nn.Tanh(), nn.Sigmoid()])
        self.max = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.ada = nn.AdaptiveMaxPool2d((3, 3))
        self.fc = nn.Linear(16 * 9 + 16, 12)
        self.bn1d = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.acts[0](self.bn(self.stem(x)))
        y = self.acts[1](self.dw(x)) * self.se(x)
        x = x + self.acts[2](self.group(y)) - 0.5 * y
        x = torch.cat([self.max(x), torch.relu(self.avg(self.max(x)))], dim=1)
        pooled = torch.flatten(self.ada(x), 1)
        mean = x.mean((2, 3))
        z = torch.cat([pooled, self.acts[3](mean)], 1)
        return self.head(self.acts[4](self.bn1d(self.fc(z))))


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _c_logits(model: nn.Module, shape: tuple[int, ...], stored: dict, x: torch.Tensor, tmp: Path) -> np.ndarray:
    gm = traced(model, shape)[1]
    cmodel = generate(lower(gm, stored, shape), "m", "test")
    built = cbuild.build(cmodel, tmp)
    return cbuild.run(built, x.numpy(), cmodel.output_size)[0]


def test_bit_packing_is_least_significant_bit_first():
    assert pack_bits(np.array([1, 2, 3]), 2) == bytes([0b111001]) + bytes(4)
    assert pack_bits(np.array([5, 0, 7]), 3) == bytes([0b11000101, 0b1]) + bytes(4)


def test_narrowest_gaps_keep_the_positions():
    positions = np.array([0, 3, 4, 200, 1000])
    from slimzip.coding import gaps_encode

    s = Stream((2000,), np.zeros(2, np.float32), 1, np.zeros(5, np.int64), 5, gaps_encode(positions, 5))
    narrow = s.narrowest()
    assert (narrow.positions() == positions).all() and len(narrow.gaps) * narrow.index_bits <= len(s.gaps) * 5


@needs_cc
def test_every_operator_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(EveryOperator())
    x = torch.randn(16, *SHAPE)
    with torch.no_grad():
        want = model(x).numpy()
    got = _c_logits(model, SHAPE, {}, x, tmp_path)
    assert np.abs(got - want).max() < 1e-4 and (got.argmax(1) == want.argmax(1)).all()


@needs_cc
@pytest.mark.parametrize("name", ["resnet18ish", "mobilenetv2ish", "senet", "densenetish"])
def test_user_models_compressed_to_slz_run_as_c(name, tmp_path):
    """A user's CNN, compressed into a .slz with its graph, exported to C from the file alone."""
    torch.manual_seed(0)
    model = _randomize_bn(FOREIGN[name](num_classes=4))
    x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 4, (64,))
    slimzip.compress(model, (x, y), (x, y), sparsity=0.6, epochs=0, prune_steps=1, out=tmp_path / "m.slz",
                     verbose=False)
    r = slimzip.export(tmp_path / "m.slz", tmp_path / "out" / "net.c", format="c", check_images=8, seed=3)
    assert r["check"]["same_argmax"] == 1.0 and r["check"]["max_abs_diff"] < 1e-3
    assert (tmp_path / "out" / "net.c").exists() and (tmp_path / "out" / "net.h").exists()
    assert r["flash_bytes"] > r["weight_bytes"] > 0 and r["ram_bytes"] >= r["arena_bytes"]
    assert "int net_predict(const float *input, float *logits);" in (tmp_path / "out" / "net.h").read_text()


@needs_cc
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.slz")), ids=lambda p: p.name)
def test_corpus_files_run_as_c_with_weights_no_larger_than_fixed_width_streams(path, tmp_path):
    r = slimzip.export(path, tmp_path / "m.c", format="c", check_images=16)
    assert r["check"]["same_argmax"] == 1.0 and r["check"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("name, operator", [("shufflenetish", "getitem"), ("convnextish", "permute")])
def test_an_operator_the_backend_lacks_is_named(name, operator):
    model = FOREIGN[name](num_classes=4).eval()
    with pytest.raises(UnsupportedOperator, match=operator):
        lower(traced(model, (3, 32, 32))[1], {}, (3, 32, 32))


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lenet_slz(tmp_path_factory, data_dir) -> Path:
    """A LeNet-5 trained one epoch on 500 MNIST images, compressed with fixed knobs (the file names its data)."""
    tmp = tmp_path_factory.mktemp("lenet")
    assert main(["train", "--model", "lenet-5-bn", "--epochs", "1", "--subset", "500", "--out", str(tmp / "run"),
                 "--quiet"]) == 0
    assert main(["compress", str(tmp / "run"), "--sparsity", "0.9", "--prune-steps", "1", "--retrain-epochs", "0",
                 "--centroid-epochs", "0", "--out", str(tmp / "l5.slz"), "--quiet"]) == 0
    return tmp / "l5.slz"


@needs_cc
def test_cli_c_export_checks_on_the_test_split_and_refuses_bad_input(capsys, lenet_slz, tmp_path, monkeypatch):
    capsys.readouterr()
    src = lenet_slz
    code, out, _ = _cli(capsys, "export", str(src), "--format", "c", "--out", str(tmp_path / "l5.c"), "--check",
                        "--check-images", "300", "--json")
    r = json.loads(out)
    assert code == 0 and r["split"] == "test" and r["check"]["images"] == 300 and r["check"]["same_argmax"] >= 0.99
    assert r["check"]["accuracy"] == pytest.approx(r["check"]["pytorch_accuracy"], abs=0.01)
    assert r["weight_bytes"] <= 1.5 * r["source_bytes"]  # the compressed weights stay compressed
    model = FOREIGN["convnextish"](num_classes=4)
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 4, (32,))
    slimzip.compress(model, (x, y), (x, y), sparsity=0.5, epochs=0, prune_steps=1, out=tmp_path / "cx.slz",
                     verbose=False)
    capsys.readouterr()
    untraceable = tmp_path / "none.c"
    for argv, message in ((["export", str(tmp_path / "cx.slz"), "--format", "c", "--out", str(untraceable)],
                           "has no operator for"),
                          (["export", str(src), "--format", "c", "--out", str(tmp_path / "x.txt")], "must end in .c"),
                          (["export", str(src), "--format", "c"], "--out")):
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("CC", "no-such-compiler-here")
    code, _, err = _cli(capsys, "export", str(src), "--format", "c", "--out", str(untraceable), "--check")
    assert code == 2 and "no C compiler" in err and len(err.strip().splitlines()) == 1
    assert not untraceable.exists() and not untraceable.with_suffix(".h").exists()  # nothing half-written


def test_int8_onnx_keeps_the_accuracy(capsys, lenet_slz, tmp_path):
    pytest.importorskip("onnxruntime")
    capsys.readouterr()
    src = lenet_slz
    code, out, _ = _cli(capsys, "export", str(src), "--format", "onnx-int8", "--out", str(tmp_path / "q.onnx"),
                        "--split", "test", "--check-images", "500", "--json")
    r = json.loads(out)
    fp32 = json.loads(_cli(capsys, "export", str(src), "--onnx", str(tmp_path / "f.onnx"), "--json")[1])
    assert code == 0 and r["file_bytes"] < fp32["file_bytes"] / 3 and (tmp_path / "q.onnx").exists()
    assert abs(r["check"]["accuracy"] - r["check"]["pytorch_accuracy"]) <= 0.02 and r["check"]["same_argmax"] > 0.95


def _float_weighted(graph, ops) -> tuple[list[str], set[str]]:
    """The weighted nodes of an ONNX graph in order, and those whose weight is not dequantized from int8."""
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weighted = [n for n in graph.node if n.op_type in ops]
    return [n.name for n in weighted], {n.name for n in weighted if n.input[1] not in dequantized}


def test_int8_onnx_keeps_its_ends_float_when_int8_disagrees_with_fp32(capsys, lenet_slz, tmp_path, monkeypatch):
    """The first and last weighted nodes can stay float; below the agreement floor on the calibration
    images the export tries that, keeps it if it agrees more, and names the nodes it kept float."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from slimzip.deploy import int8

    capsys.readouterr()
    assert _cli(capsys, "export", str(lenet_slz), "--onnx", str(tmp_path / "f.onnx"))[0] == 0
    images = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    prepared = int8._prepared((tmp_path / "f.onnx").read_bytes())
    ends = int8._weighted_ends(prepared)
    blob = int8._quantize(prepared, images, ends)
    order, floats = _float_weighted(onnx.load_from_string(blob).graph, int8.WEIGHTED_OPS)
    assert len(order) >= 3 and ends == [order[0], order[-1]] and floats == set(ends)
    monkeypatch.setattr(int8, "AGREEMENT_FLOOR", 1.01)  # no int8 graph reaches it: the fallback is tried
    code, out, _ = _cli(capsys, "export", str(lenet_slz), "--format", "onnx-int8", "--out", str(tmp_path / "q.onnx"),
                        "--split", "test", "--check-images", "200", "--json")
    order, floats = _float_weighted(onnx.load(str(tmp_path / "q.onnx")).graph, int8.WEIGHTED_OPS)
    assert code == 0 and floats == set(json.loads(out)["float_nodes"])


def test_int8_tflite_agrees_with_pytorch(capsys, lenet_slz, tmp_path):
    pytest.importorskip("litert_torch")
    capsys.readouterr()
    code, out, _ = _cli(capsys, "export", str(lenet_slz), "--format", "tflite-int8", "--out", str(tmp_path / "q.tflite"),
                        "--split", "test", "--check-images", "300", "--json")
    r = json.loads(out)
    assert code == 0 and (tmp_path / "q.tflite").stat().st_size == r["file_bytes"]
    assert abs(r["check"]["accuracy"] - r["check"]["pytorch_accuracy"]) <= 0.02
