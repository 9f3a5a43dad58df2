"""Write docs/registry.md: every slimzip registry architecture as a reader outside slimzip needs it to
decode a version-4 file that names it (whose tensor rows carry no names or shapes): the tensors in row
order with their full-width shapes, and each plan root with every tensor its channels narrow.

Usage: python docs/make_registry.py [NAME ...]   (default: every registry model)
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from pathlib import Path

import torch

from slimzip.models import MODELS, create_model
from slimzip.structured import apply_plan
from slimzip.structured.groups import PRUNABLE, _out_items, channel_groups
from slimzip.structured.plans import registry_input_shape

HERE = Path(__file__).resolve().parent


def _shapes(model) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _roots(model, shape) -> list[tuple[str, int, list[str]]]:
    """(root, its channels, the members that may name the group) for every removable channel group."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups, _graph = channel_groups(model, shape)
    names = {m: n for n, m in model.named_modules()}
    out = []
    for root, group in groups.items():
        members = sorted({names[m] for m, _ in _out_items(group) if isinstance(m, PRUNABLE)} - {root})
        out.append((root, len(group[0].idxs), members))
    return out


def _narrowed(model, shape, root: str, full: dict[str, list[int]]) -> list[str]:
    """Each tensor that removing channel 0 of ``root`` narrows: its name, the dimension, where the root's
    channels start along it (a concatenation's offset) and entries per channel (a flatten's H x W)."""
    marked = copy.deepcopy(model)
    state = marked.state_dict()
    for name in full:  # every value unique in its tensor, so the removed slice is found by comparison
        state[name].copy_(torch.arange(state[name].numel(), dtype=torch.float64).reshape(state[name].shape))
    thin = apply_plan(marked, {root: list(range(1, _channels(model, root)))}, shape).state_dict()  # our own roots
    lines = []
    for name, dims in full.items():
        for d, (a, b) in enumerate(zip(dims, thin[name].shape)):
            if a != b:
                start = next(i for i in range(a) if i >= b or not torch.equal(state[name].select(d, i),
                                                                               thin[name].select(d, i)))
                lines.append(f"{name} dim {d}" + (f" from {start}" if start else "") +
                             (f" ({a - b} per channel)" if a - b != 1 else ""))
    return lines


def _channels(model, root: str) -> int:
    m = dict(model.named_modules())[root]
    return m.out_channels if hasattr(m, "out_channels") else m.out_features


def section(name: str) -> str:
    entry = MODELS[name]
    model, shape = create_model(name), registry_input_shape(name)
    full = _shapes(model)
    lines = [f"## {name}", "", f"{entry.paper}. Input {' x '.join(map(str, shape))} ({entry.dataset}); "
             f"{sum(math.prod(s) for s in full.values()):,} stored values at full width.", "",
             "Tensors, in version-4 row order (sorted names), with their full-width shapes:", "", "```"]
    lines += [f"{n} {s}" for n, s in sorted(full.items())]
    lines += ["```", "", "Plan roots (channels at full width; other layers that may name the same group, "
              "as a second root that keeps the same channels): the tensors one removed channel narrows.", ""]
    for name_, m in model.named_modules():
        if type(m).__name__ == "PadShortcut":
            lines.append(f"- `{name_}` (no tensors; an option-A shortcut, stride {m.stride}, {m.in_channels} -> "
                         f"{m.out_channels} channels): output channel {(m.out_channels - m.in_channels) // 2} + i "
                         "is input channel i subsampled by the stride, the other outputs are zero; a plan drops each "
                         "pair whose input or output channel it removes and renumbers both sides")
    for root, size, members in _roots(model, shape):
        also = f"; also named by {', '.join(members)}" if members else ""
        lines.append(f"- `{root}` ({size}{also}): " + ", ".join(f"`{x}`" for x in _narrowed(model, shape, root, full)))
    return "\n".join(lines) + "\n"


def main(names: list[str]) -> None:
    head = ("# The registry architectures\n\n"
            "A `.slz` file whose `model` names a registry architecture (`{\"name\": N, \"kwargs\": K, \"plan\": P}`, "
            "docs/FORMAT.md) stores no layer names or shapes: a reader builds the architecture. This page gives, for "
            "each name, what a reader outside slimzip needs: every tensor of the model at full width in the order "
            "of version 4's rows (`num_batches_tracked` left out), and the plan roots, each with every tensor a "
            "removed channel narrows (a plan keeps the listed channels of a root; every tensor it couples loses the "
            "same channels, in the same order). `kwargs.num_classes` C changes only the last layer: its output "
            "dimension (and bias) is C instead of 10. The model's last layer is never a plan root.\n\n"
            "Written by `python docs/make_registry.py` from slimzip's registry code; a test checks it is current.\n\n")
    sections = [section(n) for n in names]
    (HERE / "registry.md").write_text(head + "\n".join(sections))
    print(f"wrote {HERE / 'registry.md'} ({len(sections)} architectures)")


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
