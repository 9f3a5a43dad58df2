"""Every codec: decode(encode(x)) == x, on empty, single-symbol, skewed and random inputs; long gaps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimzip.coding import CODECS, FormatError, canonical_codes, entropy_bits, gaps_decode, gaps_encode, \
    huffman_lengths


@st.composite
def symbol_arrays(draw):
    bits = draw(st.integers(1, 12))
    alphabet = 2 ** bits
    n = draw(st.integers(0, 3000))
    kind = draw(st.sampled_from(["uniform", "skewed", "constant"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if kind == "uniform":
        x = rng.integers(0, alphabet, n)
    elif kind == "skewed":
        x = np.minimum(rng.geometric(0.4, n) - 1, alphabet - 1)
    else:
        x = np.full(n, draw(st.integers(0, alphabet - 1)))
    return x.astype(np.int64), alphabet


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=60, deadline=None)
@given(data=symbol_arrays())
def test_round_trip(name, data):
    x, alphabet = data
    codec = CODECS[name]
    assert np.array_equal(codec.decode(codec.encode(x, alphabet), len(x), alphabet), x)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_empty_and_single_symbol(name):
    codec = CODECS[name]
    for x in (np.zeros(0, dtype=np.int64), np.array([7]), np.full(5000, 3)):
        assert np.array_equal(codec.decode(codec.encode(x, 16), len(x), 16), x)


@pytest.mark.parametrize("name", ["huffman", "rans"])
def test_entropy_coders_approach_the_entropy(name):
    x = np.minimum(np.random.default_rng(0).geometric(0.3, 200_000) - 1, 31)
    bits = 8 * len(CODECS[name].encode(x, 32)) / len(x)
    h = entropy_bits(x)
    assert h <= bits <= h + (0.1 if name == "huffman" else 0.01)


def test_huffman_lengths_are_a_prefix_code_and_limited():
    counts = np.array([2 ** i for i in range(30)])  # Fibonacci-like skew forces depth > 16 unlimited
    lengths = huffman_lengths(counts)
    assert lengths.max() <= 16 and np.sum(2.0 ** -lengths) <= 1.0
    codes = canonical_codes(lengths)
    words = {format(int(c), f"0{int(l)}b") for c, l in zip(codes, lengths)}
    assert not any(a != b and b.startswith(a) for a in words for b in words)


@settings(max_examples=100, deadline=None)
@given(numel=st.integers(1, 100_000), density=st.floats(0.0, 1.0), index_bits=st.integers(1, 8),
       seed=st.integers(0, 1000))
def test_gaps_round_trip_with_fillers(numel, density, index_bits, seed):
    rng = np.random.default_rng(seed)
    positions = np.flatnonzero(rng.random(numel) < density)
    symbols = gaps_encode(positions, index_bits)
    assert symbols.max(initial=0) < 2 ** index_bits
    assert np.array_equal(gaps_decode(symbols, index_bits, numel), positions)


def test_long_gap_uses_fillers():
    symbols = gaps_encode(np.array([0, 1000]), 3)  # E = 7
    assert np.sum(symbols == 7) == 999 // 7 and np.array_equal(gaps_decode(symbols, 3, 1001), [0, 1000])
    with pytest.raises(FormatError):
        gaps_decode(symbols, 3, 1000)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_corrupt_streams_raise_format_error_or_decode_bounded(name):
    x = np.random.default_rng(0).integers(0, 32, 5000)
    blob = CODECS[name].encode(x, 32)
    rng = np.random.default_rng(1)
    for _ in range(50):
        cut = bytes(blob[: rng.integers(0, len(blob))])
        try:
            out = CODECS[name].decode(cut, len(x), 32)
        except FormatError:
            continue
        assert len(out) == len(x) and out.min() >= 0 and out.max() < 32


def test_a_rans_stream_must_decode_to_the_counts_its_table_states():
    import struct

    import numpy as np

    from slimzip.coding import CODECS, FormatError

    table = struct.pack("<I", 2) + struct.pack("<HI", 0, 3) + struct.pack("<HI", 1, 5)
    with pytest.raises(FormatError, match="count table|corrupt"):
        CODECS["rans"].decode(table, 8, 4)  # two symbols, no words
    good = CODECS["rans"].encode(np.array([0, 1, 1, 0, 1, 1, 1, 0]), 4)
    assert CODECS["rans"].decode(good, 8, 4).tolist() == [0, 1, 1, 0, 1, 1, 1, 0]


@pytest.mark.parametrize("density", [0.003, 0.05, 0.4])
def test_index_width_zero_picks_the_smallest_position_stream_and_it_decodes(density):
    """``index_bits`` 0: the writer weighs every width and keeps a stream no larger than any fixed width's
    but a percent or two (its estimate ranks the widths, a descent can stop at a local minimum), which
    decodes to the same positions."""
    from slimzip.codec import INDEX_WIDTHS, encode_positions

    rng = np.random.default_rng(7)
    numel = 60_000
    dense = rng.random(numel) < density * (1 + np.sin(np.arange(numel) / 500))  # density varies along the tensor
    positions = np.flatnonzero(dense)
    width, gaps, (coder, data, _) = encode_positions(positions, 0, "auto")
    sizes = {w: len(encode_positions(positions, w, "auto")[2][1]) for w in INDEX_WIDTHS}
    assert width in INDEX_WIDTHS and len(data) == sizes[width] and len(data) <= 1.02 * min(sizes.values())
    decoded = gaps_decode(CODECS[coder].decode(data, len(gaps), 2 ** width), width, numel)
    assert np.array_equal(decoded, positions)


@settings(max_examples=25, deadline=None)
@given(streams=st.lists(symbol_arrays(), min_size=0, max_size=6))
def test_the_joint_stream_round_trips_and_attributes_every_bit(streams):
    """Several adaptive streams in one coder (format version 7) decode to themselves, in order; the bits each
    took add up to the coder's words less at most its final state."""
    from slimzip.joint import joint_decode, joint_encode

    data = joint_encode(streams)
    out = joint_decode(data, [(len(x), a) for x, a in streams])
    assert all(np.array_equal(y, x) for (y, _), (x, _) in zip(out, streams)) and len(out) == len(streams)
    head = (2 * len(streams) + 7) // 8
    assert 0 <= 8 * (len(data) - head) - sum(bits for _, bits in out) <= 64


def test_the_joint_stream_is_smaller_than_its_streams_apart_and_refuses_damage():
    from slimzip.coding import adaptive_cost
    from slimzip.joint import joint_decode, joint_encode

    rng = np.random.default_rng(3)
    streams = [(np.minimum(rng.geometric(0.3, n) - 1, 15), 16) for n in (40, 300, 2000, 7)]
    data = joint_encode(streams)
    apart = sum(len(CODECS["adaptive"].encode(x, a)) for x, a in streams)
    assert len(data) <= apart - 3 * 4  # a final state and a prior byte saved per stream but one
    assert len(data) <= sum(adaptive_cost(x, a)[0] for x, a in streams) / 8 + 1 + 8  # its information + one state
    specs = [(len(x), a) for x, a in streams]
    for bad in (data + b"\1\0\0\0", data[:-1], data[:-4] + bytes(4), b""):
        with pytest.raises(FormatError):
            joint_decode(bad, specs)
    with pytest.raises(FormatError, match="larger than slimzip writes"):
        joint_decode(data, [(2 ** 20, 2 ** 16)] * 4)
