"""Weight sharing (deep compression, step 2): per-layer 1-D k-means over the kept weights, and
fine-tuning of the centroids with the gradient summed over each cluster.

A layer's shared form is plain data: ``centroids`` (float32, 2**bits) and ``codes`` (one per kept
weight, in row-major order of the kept positions). The k-means is vectorised: assignment is a
``bucketize`` against the midpoints of the sorted centroids, the update a ``scatter_add``, so a
20M-weight model clusters in seconds.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import SlimzipError, unknown
from .unstructured import Masks, prunable_weights

INITS = ("linear", "density", "random")


@dataclass
class SharedLayer:
    """One layer's codebook and codes; ``weight()`` rebuilds the dense tensor."""

    centroids: torch.Tensor  # (2**bits,) float32
    codes: torch.Tensor  # (kept,) int64, indices into centroids
    mask: torch.Tensor  # bool, the layer's shape
    bits: int

    def weight(self) -> torch.Tensor:
        w = torch.zeros(self.mask.shape, dtype=torch.float32, device=self.centroids.device)
        w[self.mask] = self.centroids[self.codes]
        return w


def _init_centroids(values: torch.Tensor, k: int, init: str, gen: torch.Generator) -> torch.Tensor:
    lo, hi = values.min(), values.max()
    if init == "linear":  # Han et al.: evenly spaced between min and max (keeps the rare large weights)
        return torch.linspace(float(lo), float(hi), k, dtype=torch.float32)
    if init == "density":  # evenly spaced in the CDF
        q = torch.linspace(0, 1, k, dtype=torch.float64)
        return torch.quantile(values.double().cpu()[: 2 ** 24], q).float()
    return values[torch.randint(len(values), (k,), generator=gen)].float().cpu()


def kmeans_1d(values: torch.Tensor, bits: int, init: str = "linear", iters: int = 30,
              seed: int = 0, rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster 1-D ``values`` into 2**bits centroids; returns (sorted centroids, codes). ``rate`` > 0:
    then entropy-constrained (``ecsq``): fewer bits for the codes, for a little more distortion."""
    if init not in INITS:
        raise unknown("k-means init", init, list(INITS))
    if not 1 <= bits <= 16:
        raise SlimzipError(f"bits must be in [1, 16], got {bits}")
    values = values.detach().flatten().float().cpu()
    k = 2 ** bits
    if values.numel() == 0:
        return torch.zeros(k), torch.zeros(0, dtype=torch.long)
    centroids = _init_centroids(values, k, init, torch.Generator().manual_seed(seed)).sort().values
    for _ in range(iters):
        codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k, dtype=torch.float64).scatter_add_(0, codes, values.double())
        counts = torch.bincount(codes, minlength=k)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids.double()).float().sort().values
        if torch.equal(new, centroids):
            break
        centroids = new
    codes = None
    if rate > 0:
        centroids, codes = ecsq(values, centroids, rate)
    centroids = to_float16_grid(centroids)  # then each value goes to its nearest stored centroid
    return centroids, _assign(values, centroids, rate, codes)


ECSQ_ITERS = 20


def _assign(values: torch.Tensor, centroids: torch.Tensor, rate: float,
            codes: torch.Tensor | None = None) -> torch.Tensor:
    """Each value's code: the nearest centroid, or with ``rate`` > 0 the one of least squared error plus
    ``rate x var(values)`` per bit of the code's ideal length (``-log2`` of its share of the values), from
    ``codes`` (ecsq's) if given."""
    if rate <= 0 or len(centroids) < 2:
        return torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
    codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2) if codes is None else codes
    lam = _lambda(values, rate)
    for _ in range(ECSQ_ITERS):
        new = _ecsq_codes(values, centroids, codes, lam)
        if torch.equal(new, codes):
            break
        codes = new
    return codes


def _lambda(values: torch.Tensor, rate: float) -> float:
    """The price of one bit of code in squared error: ``rate`` x the values' variance."""
    return rate * float(values.double().var()) if len(values) > 1 else 0.0


def _ecsq_codes(values: torch.Tensor, centroids: torch.Tensor, codes: torch.Tensor, lam: float) -> torch.Tensor:
    """One entropy-constrained assignment (1-D: thresholds between neighbouring centroids, each shifted
    towards the rarer one by ``lam x (its extra bits) / (2 x gap)``, kept increasing)."""
    counts = torch.bincount(codes, minlength=len(centroids)).double()
    length = -torch.log2((counts / counts.sum()).clamp(min=1e-9))  # bits of each code
    c = centroids.double()
    gap = (c[1:] - c[:-1]).clamp(min=1e-12)
    cuts = (c[1:] + c[:-1]) / 2 + lam * (length[1:] - length[:-1]) / (2 * gap)
    cuts = torch.cummax(cuts, 0).values  # an emptied cell stays empty
    return torch.bucketize(values.double(), cuts)


def ecsq(values: torch.Tensor, centroids: torch.Tensor, rate: float,
         iters: int = ECSQ_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy-constrained scalar quantization (Chou, Lookabaugh and Gray 1989; Choi et al. 2017 for
    network weights): from k-means ``centroids``, alternate the rate-distortion assignment (``_ecsq_codes``)
    and centroid means, so that most weights fall in a few cells and the codes cost fewer bits. A cell
    left empty takes its lower neighbour's centroid (the file stores used centroids only). Returns
    (centroids, codes)."""
    k, lam = len(centroids), _lambda(values, rate)
    codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
    for _ in range(iters):
        codes = _ecsq_codes(values, centroids, codes, lam)
        sums = torch.zeros(k, dtype=torch.float64).scatter_add_(0, codes, values.double())
        counts = torch.bincount(codes, minlength=k)
        used = torch.where(counts > 0, sums / counts.clamp(min=1), torch.tensor(-math.inf, dtype=torch.float64))
        filled = torch.cummax(used, 0).values  # an empty cell takes the centroid below it: still sorted
        new = torch.where(torch.isinf(filled), used[counts > 0].min(), filled).float()
        if torch.equal(new, centroids):
            break
        centroids = new
    return centroids, codes


FLOAT16_MAX = 65504.0


def to_float16_grid(centroids: torch.Tensor) -> torch.Tensor:
    """Centroids rounded to the nearest float16 (the .slz codebooks store float16 from version 4), so the
    model in memory is exactly the model the file decodes to; values beyond float16's range stay."""
    rounded = centroids.half().float()
    return torch.where(centroids.abs() <= FLOAT16_MAX, rounded, centroids)


def default_bits(module: nn.Module, bits_conv: int, bits_fc: int) -> int:
    return bits_conv if isinstance(module, nn.Conv2d) else bits_fc


@dataclass
class WeightSharer:
    """Per-layer k-means weight sharing: ``fit(model, masks)`` sets ``layers_`` and writes the shared
    weights into the model."""

    bits_conv: int = 8  # codebook index width for conv layers (Han: 8)
    bits_fc: int = 5  # for linear layers (Han: 5)
    init: str = "linear"
    iters: int = 30  # Lloyd iterations (stops early when centroids stop moving)
    layer_bits: dict[str, int] | None = None  # per-layer overrides, by weight fqn
    rate: float = 0.0  # entropy-constrained sharing (``kmeans_1d``): 0 is plain k-means

    def fit(self, model: nn.Module, masks: Masks | None = None) -> "WeightSharer":
        modules = dict(model.named_modules())
        self.layers_: dict[str, SharedLayer] = {}
        for name, w in prunable_weights(model).items():
            module = modules[name.rsplit(".", 1)[0] if "." in name else ""]
            bits = (self.layer_bits or {}).get(name, default_bits(module, self.bits_conv, self.bits_fc))
            mask = (masks[name] if masks and name in masks else w != 0).detach().cpu()
            centroids, codes = kmeans_1d(w.detach().cpu()[mask], bits, self.init, self.iters, rate=self.rate)
            self.layers_[name] = SharedLayer(centroids, codes, mask, bits)
        write_shared_(model, self.layers_)
        return self


PENALTY_BITS = 4  # the codebook the compression-aware pull works towards: where the bits ladder usually ends


def sharing_penalty(weight: float, bits: int = PENALTY_BITS, refresh: int = 100):
    """Compression-aware training (in the spirit of soft weight-sharing and DeepCABAC's compressibility
    training): ``weight`` x, summed over the conv and linear layers, the mean squared distance of every
    kept (non-zero) weight to its nearest value among the layer's 2**bits k-means centroids and zero,
    over the layer's weight variance (so the term is scale-free). The centroids are refitted every
    ``refresh`` steps. A loss term for ``trainer.fit``: (model, x, out, y) -> scalar."""
    state: dict = {"step": 0, "grids": {}}

    def term(model: nn.Module, _x: torch.Tensor, _out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        weights = prunable_weights(model)
        if state["step"] % refresh == 0 or set(state["grids"]) != set(weights):
            state["grids"] = {name: _grid(w, bits) for name, w in weights.items()}
        state["step"] += 1
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, w in weights.items():
            grid, var = state["grids"][name]
            kept = w[w.detach() != 0]
            if kept.numel():
                near = grid[torch.bucketize(kept.detach(), (grid[1:] + grid[:-1]) / 2)]
                total = total + ((kept - near) ** 2).mean() / var
        return weight * total
    return term


def _grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """A layer's shared values (its k-means centroids and zero, sorted) and its kept weights' variance."""
    kept = w.detach()[w.detach() != 0].float().cpu()
    if kept.numel() < 2:
        return torch.zeros(1, device=w.device), 1.0
    centroids, _ = kmeans_1d(kept, bits, "density", iters=10)
    grid = torch.cat([centroids, torch.zeros(1)]).unique().sort().values
    return grid.to(w.device, w.dtype), max(float(kept.var()), 1e-12)


@torch.no_grad()
def write_shared_(model: nn.Module, layers: dict[str, SharedLayer]) -> nn.Module:
    params = dict(model.named_parameters())
    for name, layer in layers.items():
        params[name].copy_(layer.weight().to(params[name].device, params[name].dtype))
    return model


class _FromCentroids(nn.Module):
    """weight = centroids[index] where kept, else 0. The learnable tensor is the centroids, so autograd
    sums each cluster's weight gradients into its centroid's gradient (Han's centroid fine-tuning)."""

    def __init__(self, layer: SharedLayer, device: torch.device):
        super().__init__()
        index = torch.zeros(layer.mask.shape, dtype=torch.long)
        index[layer.mask] = layer.codes
        self.register_buffer("index", index.to(device))
        self.register_buffer("keep", layer.mask.to(device))
        self.init_centroids = layer.centroids.to(device)

    def forward(self, centroids: torch.Tensor) -> torch.Tensor:
        return torch.where(self.keep, centroids[self.index], torch.zeros((), dtype=centroids.dtype,
                                                                         device=centroids.device))

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self.init_centroids.to(weight.dtype)


CENTROID_GRADS = ("mean", "sum")


def tie_centroids_(model: nn.Module, layers: dict[str, SharedLayer], grad: str = "mean") -> nn.Module:
    """Make each shared layer's weight a function of its centroids (for fine-tuning them).

    ``grad='sum'``: a centroid's gradient is the sum of its cluster's weight gradients (Han et al.).
    ``grad='mean'``: that sum divided by the cluster size, so a centroid moves on the scale of one
    weight. With the sum, a cluster of hundreds of weights takes steps hundreds of times larger: on
    LeNet-300-100 it diverged at lr 0.03 (accuracy fell to 17%), so 'mean' is the default.
    """
    if grad not in CENTROID_GRADS:
        raise unknown("centroid gradient", grad, list(CENTROID_GRADS))
    modules = dict(model.named_modules())
    for name, layer in layers.items():
        module = modules[name.rsplit(".", 1)[0]]
        parametrize.register_parametrization(module, "weight", _FromCentroids(layer, module.weight.device),
                                             unsafe=True)
        if grad == "mean":
            sizes = torch.bincount(layer.codes, minlength=len(layer.centroids)).clamp(min=1)
            scale = (1.0 / sizes.float()).to(module.weight.device)
            module.parametrizations.weight.original.register_hook(lambda g, scale=scale: g * scale)
    return model


def untie_centroids_(model: nn.Module, layers: dict[str, SharedLayer]) -> dict[str, SharedLayer]:
    """Undo ``tie_centroids_``: bake the weights back into plain parameters; returns the updated layers."""
    modules = dict(model.named_modules())
    updated = {}
    for name, layer in layers.items():
        module = modules[name.rsplit(".", 1)[0]]
        centroids = to_float16_grid(module.parametrizations.weight.original.detach().float().cpu())
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        updated[name] = SharedLayer(centroids, layer.codes, layer.mask, layer.bits)
    write_shared_(model, updated)  # exactly centroids[codes], whatever rounding the parametrization did
    return updated
