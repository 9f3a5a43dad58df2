"""Deep compression: pruning, sharing, the .slz container and its decoder."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from slimzip.codec import decode_model, encode_model, model_table
from slimzip.container import VERSION, ContainerError, decode_container, encode_container, read_container, \
    write_container
from slimzip.data import get_dataset_spec
from slimzip.deep_compression import CompressConfig
from slimzip.errors import SlimzipError
from slimzip.inspection import inspect_container
from slimzip.models import MODELS, create_model
from slimzip.sharing import WeightSharer, kmeans_1d, tie_centroids_, untie_centroids_
from slimzip.unstructured import MagnitudePruner, apply_masks_, mask_hook, prunable_weights, sparsity_of

FAMILIES = ["lenet-300-100", "lenet-5-bn", "dropnet-b", "vgg11", "resnet20", "preresnet164", "densenet40",
            "densenet-bc-100"]


def _compressed(name: str, sparsity: float = 0.9, coder: str = "rans", bits=(8, 5), version: int = VERSION, **knobs):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    masks = MagnitudePruner(sparsity=sparsity).fit(model).masks_
    apply_masks_(model, masks)
    cfg = CompressConfig(sparsity=sparsity, coder=coder, bits_conv=bits[0], bits_fc=bits[1], **knobs)
    layers = WeightSharer(bits_conv=bits[0], bits_fc=bits[1]).fit(model, masks).layers_
    blob = encode_model(model, {"name": name, "kwargs": {}}, layers, cfg, {"dataset": MODELS[name].dataset},
                        version=version)
    return model, layers, blob


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruner_hits_the_sparsity(scope):
    model = create_model("lenet-5")
    MagnitudePruner(sparsity=0.8, scope=scope).fit(model)
    masks = MagnitudePruner(sparsity=0.8, scope=scope).fit(model).masks_
    apply_masks_(model, masks)
    assert sparsity_of(model) == pytest.approx(0.8, abs=1e-3)
    if scope == "layer":
        for name, w in prunable_weights(model).items():
            assert (w == 0).float().mean().item() == pytest.approx(0.8, abs=0.01), name
    kept = torch.cat([w[m].abs() for w, m in zip(prunable_weights(model).values(), masks.values())])
    assert kept.min() > 0


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_row_pattern_prunes_whole_rows_and_never_revives_a_weight(scope):
    """``pattern='row'``: a conv kernel's row, or 4 neighbouring inputs of a linear layer (the last run of a
    row shorter), is kept or pruned whole, by its mean magnitude; a second round prunes only kept weights;
    the file codes those positions in fewer bytes than single weights' at the same sparsity."""
    model = create_model("lenet-5-bn").eval()
    masks = MagnitudePruner(sparsity=0.6, scope=scope, pattern="row").fit(model).masks_
    apply_masks_(model, masks)
    assert sparsity_of(model) == pytest.approx(0.6, abs=0.01)
    for name, m in masks.items():
        rows = m.reshape(-1, m.shape[-1]) if m.dim() > 2 else m[:, :m.shape[1] // 4 * 4].reshape(m.shape[0], -1, 4)
        assert (rows.all(-1) | ~rows.any(-1)).all(), name  # every row all kept or all pruned
    before = {k: m.clone() for k, m in masks.items()}
    masks = MagnitudePruner(sparsity=0.8, scope=scope, pattern="row").fit(model).masks_
    assert all(not (m & ~before[k]).any() for k, m in masks.items())
    apply_masks_(model, masks)
    assert sparsity_of(model) == pytest.approx(0.8, abs=0.01)
    sizes = {}
    for pattern in ("weight", "row"):
        torch.manual_seed(0)
        m = create_model("lenet-5-bn").eval()
        pm = MagnitudePruner(sparsity=0.9, scope=scope, pattern=pattern).fit(m).masks_
        apply_masks_(m, pm)
        layers = WeightSharer(bits_conv=4, bits_fc=4).fit(m, pm).layers_
        blob = encode_model(m, {"name": "lenet-5-bn", "kwargs": {}}, layers, CompressConfig(), {"dataset": "mnist"})
        container = decode_container(blob)
        table = model_table(container, decode_model(container))
        sizes[pattern] = inspect_container(container, table)["components"]["indices"]
    assert sizes["row"] < 0.8 * sizes["weight"]
    with pytest.raises(SlimzipError, match="pruning pattern"):
        MagnitudePruner(pattern="block").fit(model)


def test_mask_hook_survives_momentum():
    model = create_model("lenet-300-100")
    masks = MagnitudePruner(sparsity=0.9).fit(model).masks_
    apply_masks_(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    hook = mask_hook(masks)
    for _ in range(5):
        model(torch.randn(8, 1, 28, 28)).sum().backward()
        opt.step()
        hook(model)
    assert all(torch.all(w[~masks[k]] == 0) for k, w in prunable_weights(model).items())


def test_kmeans_assigns_each_value_to_its_nearest_centroid():
    values = torch.randn(50_000)
    centroids, codes = kmeans_1d(values, 4)
    assert len(centroids) == 16 and torch.all(centroids[1:] >= centroids[:-1])
    nearest = (values[:, None] - centroids[None, :]).abs().argmin(1)
    assert torch.equal(centroids[codes], centroids[nearest])
    for init in ("density", "random"):
        c, k = kmeans_1d(values, 3, init=init)
        assert ((values - c[k]) ** 2).mean() < values.var() / 20


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_entropy_constrained_sharing_trades_error_for_fewer_code_bits(dist):
    """``rate`` > 0 (ECSQ): past a small rate the codes' entropy falls and the squared error rises as the
    rate grows; the centroids stay sorted and every code is one of them; rate 0 is plain k-means."""
    from slimzip.coding import entropy_bits

    torch.manual_seed(0)
    values = torch.randn(20_000) if dist == "normal" else torch.distributions.Laplace(0.0, 1.0).sample((20_000,))
    plain = kmeans_1d(values, 4)
    assert all(torch.equal(a, b) for a, b in zip(plain, kmeans_1d(values, 4, rate=0.0)))
    bits, errors = [], []
    for rate in (0.0, 0.01, 0.02, 0.04):
        centroids, codes = kmeans_1d(values, 4, rate=rate)
        assert torch.all(centroids[1:] >= centroids[:-1]) and int(codes.max()) < len(centroids)
        bits.append(entropy_bits(codes.numpy()))
        errors.append(float(((values - centroids[codes]) ** 2).mean()))
    # (a small rate mostly refines the k-means cells; from there a larger rate buys bits with error)
    assert bits[1] > bits[2] > bits[3] and bits[3] < 0.93 * bits[0]
    assert errors[1] < errors[2] < errors[3] < 3 * errors[0]


def test_centroid_gradient_is_the_sum_over_its_cluster():
    model = create_model("lenet-300-100")
    masks = MagnitudePruner(sparsity=0.5).fit(model).masks_
    apply_masks_(model, masks)
    layers = WeightSharer(bits_fc=3).fit(model, masks).layers_
    x = torch.randn(4, 1, 28, 28)
    model(x).square().sum().backward()
    name = "classifier.weight"
    dense_grad = dict(model.named_parameters())[name].grad.clone()
    layer = layers[name]
    expected = torch.zeros(8).index_add_(0, layer.codes, dense_grad[layer.mask])
    sizes = torch.bincount(layer.codes, minlength=8).clamp(min=1)
    for mode, want in (("sum", expected), ("mean", expected / sizes)):
        model.zero_grad()
        tie_centroids_(model, layers, grad=mode)
        model(x).square().sum().backward()
        c_grad = model.classifier.parametrizations.weight.original.grad
        assert torch.allclose(c_grad, want, atol=1e-4), mode
        if mode == "sum":
            untie_centroids_(model, layers)
    updated = untie_centroids_(model, layers)
    assert torch.equal(model.classifier.weight[layer.mask], updated[name].centroids[layer.codes])


@pytest.mark.parametrize("name", FAMILIES)
def test_file_round_trip_in_a_fresh_process(name, tmp_path):
    """The decoded file equals the in-memory model bit for bit, in another process, and inspect accounts
    for every byte."""
    model, layers, blob = _compressed(name)
    path = tmp_path / "m.slz"
    path.write_bytes(blob)
    decoded = decode_model(read_container(path))
    for k, w in prunable_weights(model).items():
        assert torch.equal(w, prunable_weights(decoded)[k]), k
    expected = tmp_path / "expected.pt"
    torch.save({k: v for k, v in decoded.state_dict().items()}, expected)
    code = ("import sys, torch; from slimzip.codec import decode_model; "
            "from slimzip.container import read_container;"
            "m = decode_model(read_container(sys.argv[1])); e = torch.load(sys.argv[2], weights_only=True);"
            "s = m.state_dict(); sys.exit(0 if all(torch.equal(s[k], e[k]) for k in e) else 1)")
    assert subprocess.run([sys.executable, "-c", code, str(path), str(expected)]).returncode == 0
    container = read_container(path)
    report = inspect_container(container, model_table(container, decoded))
    assert sum(report["components"].values()) == path.stat().st_size == report["file_bytes"]
    shape = get_dataset_spec(MODELS[name].dataset).image_shape
    x = torch.randn(2, *shape)
    want = model.eval()(x)  # the in-memory compressed model; the file holds BN and biases as float16
    assert (decoded.eval()(x) - want).abs().max() <= 1e-2 * (1 + want.abs().max())


@pytest.mark.parametrize("name, biases_folded", [("lenet-5-bn", 3), ("lenet-300-100-bn", 2), ("resnet20", 0),
                                                 ("densenet40", 0)])
def test_folded_batchnorm_computes_what_the_model_computes_in_fewer_bytes(name, biases_folded):
    """BN stored as scale + shift (a bias that only BN reads folded in): the same eval-mode outputs, with
    the running statistics and those biases as constants that cost no section bytes."""
    model, _, folded = _compressed(name, raw_dtype="float32")
    _, _, unfolded = _compressed(name, raw_dtype="float32", fold_bn=False)
    x = torch.randn(3, *get_dataset_spec(MODELS[name].dataset).image_shape)
    with torch.no_grad():
        want = model.eval()(x)
        for blob in (folded, unfolded):
            got = decode_model(decode_container(blob)).eval()(x)
            assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    container = decode_container(folded)
    table = model_table(container, decode_model(container))
    entries = {e["name"]: e for e in table}
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    constants = {n for n, e in entries.items() if e["encoding"] == "constant"}
    assert constants >= {f"{n}.{s}" for n in bns for s in ("running_mean", "running_var")}
    assert len(constants) == 2 * len(bns) + biases_folded
    assert len(folded) < len(unfolded)
    rows = inspect_container(container, table)["tensors"]
    assert all(r["bytes"] == 0 for r in rows if r["name"] in constants)


@pytest.mark.parametrize("coder", ["huffman", "rans", "fixed", "auto"])
def test_every_coder_round_trips_a_model(coder):
    model, layers, blob = _compressed("lenet-5", coder=coder)
    decoded = decode_model(decode_container(blob))
    for k, w in prunable_weights(model).items():
        assert torch.equal(w, prunable_weights(decoded)[k])


def test_fuzzed_files_are_rejected_cleanly():
    """Random truncations and bit flips: always the format's own error, never a crash or a hang."""
    _, _, blob = _compressed("lenet-300-100", sparsity=0.95)
    rng = np.random.default_rng(0)
    for trial in range(300):
        data = bytearray(blob)
        if trial % 2:
            data = data[: rng.integers(0, len(data))]
        else:
            for _ in range(rng.integers(1, 4)):
                i = rng.integers(0, len(data))
                data[i] ^= 1 << rng.integers(0, 8)
        with pytest.raises(ContainerError):
            decode_model(decode_container(bytes(data)))


def _row(manifest: dict, tag: str) -> list:
    """The first version-4 row of a kind ('s' shared, 'r' raw, 'c' constant)."""
    return next(r for r in manifest["tensors"] if r[0] == tag)


def _forge(blob: bytes, edit) -> bytes:
    """Re-encode a container with an edited manifest and valid checksums: a hostile, not a damaged, file."""
    c = decode_container(blob)
    manifest = dict(c.manifest)  # encode_container writes the section table (version 7: the one given)
    edit(manifest)

    return encode_container(manifest, c.sections, version=c.version)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["model"].update(kwargs={"num_classes": 10 ** 12}), "classes"),
    (lambda m: m["model"].update(name="vgg99"), "unknown model"),
    (lambda m: m["tensors"][0].update(nnz=10 ** 9), "out of range"),
    (lambda m: m["tensors"][0].update(shape=[10 ** 6, 10 ** 6]), "shape"),
    (lambda m: m["tensors"][0].update(gap_symbols=10 ** 9), "out of range"),
    (lambda m: m["tensors"][0].update(codes=99), "section"),
    (lambda m: m["tensors"].pop(), "do not match"),
    (lambda m: m.update(format="other"), "slimzip model"),
    (lambda m: m["tensors"][-1].update(encoding="constant", value="0"), "finite number"),
    (lambda m: m["tensors"][-1].update(encoding="constant", value=True), "finite number"),
    (lambda m: m["tensors"][-1].update(encoding="constant", value=float("inf")), "Infinity, which is not JSON"),
])
def test_hostile_manifests_are_rejected(edit, message):
    _, _, blob = _compressed("lenet-300-100", version=3)
    with pytest.raises(Exception) as info:
        decode_model(decode_container(_forge(blob, edit)))
    assert info.type.__name__ in ("ContainerError", "SlimzipError") and message in str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["tensors"].pop(), "one row per tensor"),
    (lambda m: m["tensors"].append(["c", 0.0]), "one row per tensor"),
    (lambda m: _row(m, "s").__setitem__(0, "x"), "malformed row"),
    (lambda m: _row(m, "s").append(1), "malformed row"),
    (lambda m: m["tensors"].__setitem__(0, {"encoding": "raw"}), "malformed row"),
    (lambda m: _row(m, "s").__setitem__(1, 0), "out of range"),  # no centroid
    (lambda m: _row(m, "s").__setitem__(1, 2 ** 17), "out of range"),
    (lambda m: _row(m, "s").__setitem__(5, -1), "out of range"),  # nnz
    (lambda m: _row(m, "r").__setitem__(1, "float64"), "unknown dtype"),
    (lambda m: m["tensors"].__setitem__(m["tensors"].index(_row(m, "r")), ["c", 1e30]), "do not add up"),
    (lambda m: m["model"].update(plan={"features.1": "!!"}), "not a count of kept channels"),
    (lambda m: m["model"].update(plan={"features.1": 0}), "not a count of kept channels"),
    (lambda m: m["model"].update(plan={"features.1": False}), "not a count of kept channels"),
    (lambda m: m["model"].update(plan={"features.1": 301}), r"kept indices must be distinct, in \[0, 300\)"),
])
def test_hostile_compact_manifests_are_rejected(edit, message):
    """Version 4 to 7 rows and count plans: every field checked like version 3's keyed entries."""
    _, _, blob = _compressed("lenet-300-100")
    assert decode_container(blob).version == VERSION >= 6
    with pytest.raises(ContainerError, match=message):
        decode_model(decode_container(_forge(blob, edit)))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["model"].update(plan={"features.1": "!!"}), "not base64"),
    (lambda m: m["model"].update(plan={"features.1": "AAA="}), "shortest bitmask"),
    (lambda m: m["model"].update(plan={"features.1": 5}), "bitmask string"),
])
def test_hostile_bitmask_plans_are_rejected(edit, message):
    """Versions 4 and 5 store the plan as bitmasks, still read and checked."""
    _, _, blob = _compressed("lenet-300-100", version=5)
    with pytest.raises(ContainerError, match=message):
        decode_model(decode_container(_forge(blob, edit)))


def test_count_plans_rebuild_the_model_the_bitmask_plan_rebuilt():
    """Version 6 stores how many channels a root keeps, not which: the file is smaller and decodes to
    the same tensors and the same outputs as the version-5 file of the same pruned model."""
    from slimzip.structured import ChannelPruner

    torch.manual_seed(0)
    model = create_model("lenet-5-bn").eval()
    pruner = ChannelPruner(importance="l1", channel_ratio=0.6, scope="layer").fit(model, (1, 28, 28))
    model = pruner.transform(model, (1, 28, 28)).eval()
    assert any(kept != list(range(len(kept))) for kept in pruner.plan_.values())  # not the first n channels
    masks = MagnitudePruner(sparsity=0.8).fit(model).masks_
    apply_masks_(model, masks)
    layers = WeightSharer(bits_conv=4, bits_fc=3).fit(model, masks).layers_
    spec = {"name": "lenet-5-bn", "kwargs": {}, "plan": pruner.plan_}
    v5, v6 = (encode_model(model, spec, layers, CompressConfig(), version=v) for v in (5, 6))
    assert decode_container(v6).manifest["model"]["plan"] == {k: len(v) for k, v in pruner.plan_.items()}
    a, b = decode_model(decode_container(v5)), decode_model(decode_container(v6))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(a(x), b(x)) and len(v6) < len(v5)


def test_compact_files_are_smaller_and_decode_to_the_same_weights():
    """Version 4 (rows, used float16 centroids only) against version 3 (keyed entries, float32
    codebooks of 2**bits): the same model, fewer bytes."""
    model, _, v4 = _compressed("lenet-5", bits=(8, 8))
    _, _, v3 = _compressed("lenet-5", bits=(8, 8), version=3)
    a, b = decode_model(decode_container(v4)), decode_model(decode_container(v3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert len(v4) < len(v3) - 2000


def test_write_is_atomic_and_reports_size(tmp_path):
    size = write_container(tmp_path / "a.slz", {"format": "x"}, [b"abc", b""])
    assert size == (tmp_path / "a.slz").stat().st_size
    c = read_container(tmp_path / "a.slz")  # version 7: the payload, cut when a tensor table is read
    assert c.payload == b"abc" and c.sections == [b"abc"] and [p.name for p in tmp_path.iterdir()] == ["a.slz"]
    old = decode_container(encode_container({"format": "x"}, [b"abc", b""], version=6))
    assert old.sections == [b"abc", b""]


def test_auto_coder_is_never_larger_than_any_single_coder():
    sizes = {c: len(_compressed("lenet-5", coder=c)[2]) for c in ("huffman", "rans", "fixed", "auto")}
    assert sizes["auto"] <= min(sizes["huffman"], sizes["rans"], sizes["fixed"])


def test_unknown_flags_and_manifest_bombs_are_rejected():
    import zlib

    from slimzip.container import HEADER, MAGIC, TRAILER

    blob = bytearray(_compressed("lenet-300-100")[2])
    blob[10] = 0x80  # an unknown flag
    blob = bytes(blob[:-4]) + TRAILER.pack(zlib.crc32(bytes(blob[:-4])))
    with pytest.raises(ContainerError, match="flags"):
        decode_container(blob)
    old = bytearray(_compressed("lenet-300-100", version=3)[2])  # version 1 files (before constants) still read
    old[8:10] = (1).to_bytes(2, "little")
    old = bytes(old[:-4]) + TRAILER.pack(zlib.crc32(bytes(old[:-4])))
    assert decode_container(old).manifest["format"] == "slimzip-model"
    old = old[:8] + (VERSION + 1).to_bytes(2, "little") + old[10:-4]
    with pytest.raises(ContainerError, match=f"version {VERSION + 1}"):
        decode_container(old + TRAILER.pack(zlib.crc32(old)))
    bomb = zlib.compress(b" " * (80 << 20), 9)  # inflates past the 64 MiB manifest limit
    raw = HEADER.pack(MAGIC, 1, 1, len(bomb), zlib.crc32(bomb)) + bomb
    with pytest.raises(ContainerError, match="limit"):
        decode_container(raw + TRAILER.pack(zlib.crc32(raw)))


@pytest.mark.parametrize("bits", [8, 5, 1])
def test_uint8_small_tensors_are_within_half_a_step_and_smaller(bits):
    """raw_dtype uint8 (version 4; version 6 with a float16 lo and step, and ``raw_bits``-bit steps packed):
    BN scale / shift and biases as lo + step x q; each decoded value within half a step of the float32 one,
    the step at most a float16 rounding coarser than (max - min) / (2^bits - 1), each section exactly its
    header and packed bits, and the file smaller than with float16."""
    from slimzip.codec import quantized_parts

    model, _, f16 = _compressed("lenet-5-bn", raw_dtype="float32")
    v5 = decode_container(_compressed("lenet-5-bn", raw_dtype="uint8", version=5)[2])
    _, _, u8 = _compressed("lenet-5-bn", raw_dtype="uint8", raw_bits=bits)
    c = decode_container(u8)
    a, b = decode_model(decode_container(f16)), decode_model(c)
    table = [e for e in model_table(c, b) if e["encoding"] in ("quantized", "packed")]
    assert table and {e["encoding"] for e in table} == {"quantized" if bits == 8 else "packed"}
    assert len(u8) < len(f16) - 2 * len(table)
    numels = [math.prod(e["shape"]) for e in table]
    assert sum(map(len, v5.sections)) - sum(map(len, c.sections)) == sum(4 + n - (n * bits + 7) // 8 for n in numels)
    steps = {e["name"]: quantized_parts(c, e, n)[1] for e, n in zip(table, numels)}
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if name in steps:
            span, top = float(x.max() - x.min()), 2 ** bits - 1
            assert span / top <= steps[name] <= (span + 2 ** -10 * float(x.abs().max())) / top * (1 + 2 ** -9), name
            assert (x - y).abs().max() <= steps[name] / 2 + 1e-6 * float(x.abs().max()), name


@pytest.mark.parametrize("edit, message", [
    (lambda data: data[:-1], "bytes for"),
    (lambda data: data[:-1] + bytes([data[-1] | 1]), "padding bits"),
])
def test_hostile_packed_sections_are_rejected(edit, message):
    """A packed section is exactly its float16 header and its bits, the padding zero; packed rows exist from
    version 6 and hold 1 to 8 bits."""

    for version in (6, 7):  # version 7 implies the section's length: a shorter one misplaces every later section
        _, _, blob = _compressed("lenet-5-bn", raw_dtype="uint8", raw_bits=3, version=version)
        c = decode_container(blob)
        manifest = dict(c.manifest)  # encode_container writes the section table (version 7: the one given)
        entry = next(e for e in model_table(c, decode_model(c))
                     if e["encoding"] == "packed" and math.prod(e["shape"]) * 3 % 8)
        sections = list(c.sections)
        sections[entry["data"]] = edit(sections[entry["data"]])
        with pytest.raises(ContainerError, match=message if version == 6 or message != "bytes for" else "add up"):
            decode_model(decode_container(encode_container(manifest, sections, version=c.version)))
    for version, row, message in ((5, ["p", 3], "from format version 6"), (6, ["p", 9], "out of range"),
                                  (6, ["p", True], "out of range")):
        forged = {**manifest, "tensors": [row if r[0] == "p" else r for r in manifest["tensors"]]}
        with pytest.raises(ContainerError, match=message):
            decode_model(decode_container(encode_container(forged, list(c.sections), version=version)))


@pytest.mark.parametrize("edit, message", [
    (lambda m: _row(m, "q").append(0.5), "malformed row"),
    (lambda m: m["tensors"].__setitem__(m["tensors"].index(_row(m, "q")), ["r", "float16"]), "add up"),  # v7: implied
])
def test_hostile_quantized_rows_are_rejected(edit, message):
    _, _, blob = _compressed("lenet-5-bn", raw_dtype="uint8")
    with pytest.raises(ContainerError, match=message):
        decode_model(decode_container(_forge(blob, edit)))


@pytest.mark.parametrize("version, header", [(5, "<ff"), (6, "<ee")])
def test_quantized_sections_need_a_finite_lo_and_a_step_of_at_least_zero(version, header):
    import struct

    _, _, blob = _compressed("lenet-5-bn", raw_dtype="uint8", version=version)
    c = decode_container(blob)
    manifest = dict(c.manifest)  # encode_container writes the section table (version 7: the one given)
    table = model_table(c, decode_model(c))
    q = next(e for e in table if e["encoding"] == "quantized")
    for lo, step in ((float("nan"), 0.1), (0.0, -1.0), (float("inf"), 0.0)):
        sections = list(c.sections)
        sections[q["data"]] = struct.pack(header, lo, step) + sections[q["data"]][struct.calcsize(header):]
        with pytest.raises(ContainerError, match="step >= 0"):
            decode_model(decode_container(encode_container(manifest, sections, version=c.version)))


def test_version_7_holds_the_streams_in_one_joint_stream_and_decodes_the_same_weights():
    """``--coder auto`` at version 7 puts a stream in the joint stream when its information there costs less
    than its own section; the model decodes to the version-6 file's weights in fewer bytes, ``inspect``'s
    components still add up, and an explicit coder writes no joint stream."""
    from slimzip.inspection import inspect_container

    _, _, v7 = _compressed("lenet-5-bn", coder="auto", raw_dtype="uint8", version=7)
    _, _, v6 = _compressed("lenet-5-bn", coder="auto", raw_dtype="uint8", version=6)
    c7, c6 = decode_container(v7), decode_container(v6)
    a, b = decode_model(c7), decode_model(c6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    rows = [r for r in c7.manifest["tensors"] if r[0] == "s"]
    assert any("joint" in r[3:5] for r in rows) and len(v7) < len(v6) - 4 * sum(r[3:5].count("joint") for r in rows) + 8
    assert sum(inspect_container(c7, model_table(c7, a))["components"].values()) == len(v7)
    _, _, apart = _compressed("lenet-5-bn", coder="adaptive", raw_dtype="uint8")
    assert not any("joint" in r for r in decode_container(apart).manifest["tensors"])


def test_streams_past_the_joint_streams_work_bound_are_coded_apart(monkeypatch):
    """The joint stream's work (blocks x alphabet, summed) stays within ``ADAPTIVE_WORK``: a stream that
    would take it past is written in its own adaptive section, and the file decodes the same."""
    from slimzip import codec, coding

    _, _, whole = _compressed("lenet-5-bn", coder="auto")
    expected = decode_model(decode_container(whole)).state_dict()
    monkeypatch.setattr(coding, "ADAPTIVE_WORK", 2600)  # the largest stream fits, not the sum
    monkeypatch.setattr(codec, "ADAPTIVE_WORK", 2600)
    _, _, split = _compressed("lenet-5-bn", coder="auto")
    rows = decode_container(split).manifest["tensors"]
    assert any("adaptive" in r for r in rows) and any("joint" in r for r in rows)
    decoded = decode_model(decode_container(split)).state_dict()
    assert all(torch.equal(decoded[k], expected[k]) for k in expected)
