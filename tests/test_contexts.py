"""Context-modelled code streams (.slz version 8): exact round trips in the joint stream, the model pays where
neighbouring weights share their sign, and the bounds hold on both sides."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimzip import contexts
from slimzip.coding import FormatError, adaptive_cost
from slimzip.joint import JointReader, joint_encode


@st.composite
def coded_tensors(draw):
    """(codes, alphabet, positions, shape, codebook): a conv or linear weight's kept positions and codes."""
    shape = draw(st.sampled_from([(4, 3, 3, 3), (6, 2, 5, 5), (8, 16), (3, 40), (5, 7, 1, 1), (50,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    numel = math.prod(shape)
    positions = np.flatnonzero(rng.random(numel) < draw(st.floats(0.0, 1.0)))
    alphabet = draw(st.integers(2, 40))
    codebook = np.sort(rng.normal(size=alphabet)).astype(np.float32)
    codes = rng.integers(0, alphabet, len(positions))
    return codes, alphabet, positions, shape, codebook


def _plan(member):
    codes, alphabet, positions, shape, codebook = member
    return contexts.plan(positions, shape, codebook)


@settings(max_examples=40, deadline=None)
@given(members=st.lists(coded_tensors(), min_size=0, max_size=4),
       streams=st.lists(st.integers(0, 500), min_size=0, max_size=3), seed=st.integers(0, 99))
def test_context_members_round_trip_after_the_adaptive_ones(members, streams, seed):
    """A joint stream of adaptive members then context members decodes to itself, member by member in the
    writer's order, each context member from its tensor's positions and codebook alone; the bits each took
    add up to the words less at most the coder's final state."""
    rng = np.random.default_rng(seed)
    adaptive = [(rng.integers(0, 16, n), 16) for n in streams]
    data = joint_encode(adaptive, [(m[0], m[1], _plan(m)) for m in members])
    reader = JointReader(data, len(adaptive) + len(members))
    out = [reader.adaptive(len(x), a) for x, a in adaptive]
    out += [reader.context(len(m[0]), m[1], _plan(m)) for m in members]
    reader.close()
    assert all(np.array_equal(y, x) for (y, _), x in zip(out, [x for x, _ in adaptive] + [m[0] for m in members]))
    head = (2 * (len(adaptive) + len(members)) + 7) // 8
    assert 0 <= 8 * (len(data) - head) - sum(bits for _, bits in out) <= 64


def test_coding_order_is_by_rank_and_every_context_is_known_before_its_block():
    """Codes are coded by their rank in their unit (a kernel; a linear row), so every block's contexts read
    only codes of earlier blocks; the context says: first of its unit, or the previous one's sign and
    adjacency."""
    positions = np.array([0, 1, 4, 9, 10, 11, 20])  # kernels of 9: [0, 1, 4], [9, 10, 11], [20]
    codebook = np.array([-0.5, 0.25], dtype=np.float32)
    codes = np.array([0, 1, 1, 1, 0, 0, 1])
    plan = contexts.plan(positions, (3, 1, 3, 3), codebook)
    assert plan.order.tolist() == [0, 3, 6, 1, 4, 2, 5] and plan.steps == 3
    assert plan.contexts(np.arange(7), codes).tolist() == [0, 3, 2, 0, 4, 3, 0]
    rank_of = {i: r for r, unit in enumerate([[0, 3, 6], [1, 4], [2, 5]]) for i in unit}
    for a, b in zip(plan.bounds, plan.bounds[1:]):
        block = plan.order[a:b]
        assert len({rank_of[i] for i in block}) == 1  # a block never holds a code and the one it reads


def test_the_context_model_pays_where_neighbours_share_their_sign():
    """Codes whose sign follows the previous weight of the kernel cost fewer bits under the context model
    than under the adaptive one, and the coded bytes are that information plus the coder's state; codes
    with no such structure cost about the same (the writer then keeps the adaptive stream)."""
    rng = np.random.default_rng(0)
    shape = (64, 32, 3, 3)
    positions = np.flatnonzero(rng.random(math.prod(shape)) < 0.4)
    codebook = np.array([-0.3, -0.1, 0.1, 0.3], dtype=np.float32)
    unit = positions // 9
    sign = np.zeros(len(positions), dtype=int)
    for i in range(len(positions)):  # the sign of the previous weight of the same kernel, 90% of the time
        same = i and unit[i] == unit[i - 1]
        sign[i] = (sign[i - 1] if rng.random() < 0.9 else 1 - sign[i - 1]) if same else rng.integers(2)
    codes = 2 * sign + rng.integers(0, 2, len(positions))
    plan = contexts.plan(positions, shape, codebook)
    with_context, _ = contexts.cost(codes, 4, plan)
    plain, _ = adaptive_cost(codes, 4)
    assert with_context < 0.85 * plain  # the ideal: 28% firsts at 2 bits, the rest at 1 + H(0.9) = 1.47
    data = joint_encode([], [(codes, 4, plan)])
    assert len(data) <= with_context / 8 + 1 + 8
    shuffled = rng.permutation(codes)
    assert contexts.cost(shuffled, 4, plan)[0] > 0.99 * adaptive_cost(shuffled, 4)[0]


def test_a_damaged_context_member_is_refused():
    rng = np.random.default_rng(1)
    positions = np.flatnonzero(rng.random(300) < 0.5)
    codebook = np.array([-1.0, 0.5, 2.0], dtype=np.float32)
    codes = rng.integers(0, 3, len(positions))
    plan = contexts.plan(positions, (10, 30), codebook)
    data = joint_encode([], [(codes, 3, plan)])
    for bad in (data + b"\1\0\0\0", data[:-1], data[:-4] + bytes(4)):
        with pytest.raises(FormatError):
            reader = JointReader(bad, 1)
            reader.context(len(codes), 3, plan)
            reader.close()
    with pytest.raises(FormatError, match="positions do not match"):  # the count disagrees with the positions
        JointReader(data, 1).context(len(codes) + 1, 3, plan)


def _smooth_file(name: str, version: int = 8, sparsity: float = 0.9) -> bytes:
    """A registry model whose weights follow their neighbour along each kernel row (a linear layer's row),
    pruned, shared (4-bit conv, 3-bit linear codebooks) and written with ``--coder auto`` as ``version``."""
    from slimzip.codec import encode_model
    from slimzip.deep_compression import CompressConfig
    from slimzip.models import MODELS, create_model
    from slimzip.sharing import WeightSharer
    from slimzip.unstructured import MagnitudePruner, apply_masks_

    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(torch.cumsum(torch.randn_like(m.weight), dim=-1) / 30)
    masks = MagnitudePruner(sparsity=sparsity).fit(model).masks_
    apply_masks_(model, masks)
    layers = WeightSharer(bits_conv=4, bits_fc=3).fit(model, masks).layers_
    cfg = CompressConfig(sparsity=sparsity, coder="auto", bits_conv=4, bits_fc=3)
    return encode_model(model, {"name": name, "kwargs": {}}, layers, cfg, {"dataset": MODELS[name].dataset},
                        version=version)


def _context_rows(blob: bytes) -> int:
    from slimzip.container import decode_container

    return sum(r[3] == "context" for r in decode_container(blob).manifest["tensors"] if r[0] == "s")


def test_version_8_codes_neighbours_under_contexts_and_decodes_the_version_7_weights():
    """A LeNet-300-100 whose weights follow their row neighbour: ``--coder auto`` at version 8 names
    ``context`` for its code streams, the file is smaller than version 7's, decodes to the same weights, and
    ``inspect``'s components add up; a version-7 file naming ``context`` is refused."""
    from slimzip.codec import decode_model, model_table
    from slimzip.container import ContainerError, decode_container, encode_container
    from slimzip.inspection import inspect_container

    v8, v7 = _smooth_file("lenet-300-100", 8), _smooth_file("lenet-300-100", 7)
    assert _context_rows(v8) >= 1 and len(v8) < len(v7)
    c8, c7 = decode_container(v8), decode_container(v7)
    a, b = decode_model(c8), decode_model(c7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert sum(inspect_container(c8, model_table(c8, a))["components"].values()) == len(v8)
    with pytest.raises(ContainerError, match="context coder exists from format version 8"):
        decode_model(decode_container(encode_container(c8.manifest, [c8.payload], version=7)))


def test_context_streams_past_their_bounds_keep_their_former_coding(monkeypatch):
    """The writer keeps the file's context streams within ``CONTEXT_STEPS`` (and ``CONTEXT_WORK``): past them a
    code stream goes back to the coding it had before (and decodes the same); a reader refuses a file
    whose context streams take more steps than the bound."""
    from slimzip.codec import decode_model
    from slimzip.container import ContainerError, decode_container

    whole = _smooth_file("resnet20", sparsity=0.5)
    expected = decode_model(decode_container(whole)).state_dict()
    assert _context_rows(whole) >= 2
    monkeypatch.setattr(contexts, "CONTEXT_STEPS", 12)  # one 3x3 conv's steps fit, not two
    with pytest.raises(ContainerError, match="more steps than slimzip writes"):
        decode_model(decode_container(whole))
    bounded = _smooth_file("resnet20", sparsity=0.5)
    assert _context_rows(bounded) == 1
    decoded = decode_model(decode_container(bounded)).state_dict()
    assert all(torch.equal(decoded[k], expected[k]) for k in expected)
