"""The search driver: runs a strategy against a candidate pipeline, journals every candidate, counts
what the search cost, and picks the smallest file that meets the target."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..config import CODING_FIELDS, CodingConfig, CompressConfig, TuneConfig
from ..errors import NarrowingError, SlimzipError, check_range, unknown
from ..options import knob
from ..progress import log, pct
from .journal import Candidate, Journal, Knobs
from .strategies import STRATEGIES

SPECULATE = ("off", "on")


class OverBudgetError(SlimzipError):
    """A candidate's narrowed model breaks a params or MACs budget: refused before any training (a cheap
    screen), journaled as failed with the budget it breaks."""


# a failed candidate, journaled; the search goes on
CANDIDATE_FAILURES = (FloatingPointError, NarrowingError, OverBudgetError)


@dataclass(frozen=True)
class SearchConfig(TuneConfig, CodingConfig):
    """Everything a search needs besides the target (its coding and tuning knobs from ``CodingConfig``
    and ``TuneConfig``, shared with fixed-knob compression). Saved in the journal: a run directory holds
    one search, and running it again with other settings is refused."""

    strategy: str = "frontier"  # the one default strategy (the CLI's --search, slimzip.search)
    step: float = knob(0.1, "search: step width of channel ratio and sparsity (frontier: its first step)")
    margin: float | None = knob(None, "search: accuracy held back while removing channels (none: half the allowed "
                                      "drop)", points=True)
    refine: int = knob(2, "search: refinement rounds, the step halves each (frontier: finest step = step / 2^refine)")
    max_channel_ratio: float = knob(0.9, "search: largest channel ratio tried")
    max_sparsity: float = knob(0.99, "search: largest weight sparsity tried")
    finetune_epochs: int = knob(1, "search: fine-tune epochs after each pruning step")
    short_epochs: float = knob(0.5, "frontier: the short fine-tune tried before a full one, in epochs (0: none)")
    calibration_images: int = knob(2048, "search: images that re-estimate BN statistics after pruning without "
                                         "training (0: off)")
    screen_gap: float = knob(0.05, "frontier: fine-tune a screened candidate only if it misses by less than this",
                             points=True)
    scope: str = knob("global", "weight-pruning threshold: global or layer")
    distill: float = knob(0.0, "search: weight of knowledge distillation from the input model in every fine-tune "
                               "(0: off; the frozen teacher's forward passes are not counted as epochs)")
    teacher: str | None = knob(None, "search: distill from this checkpoint directory instead of the input model "
                                     "(same dataset; a stronger model, even of another architecture)")
    train_subset: int | None = knob(None, "search: fine-tune on the first N training images only", positive=True)
    max_epochs: float | None = knob(None, "search: budget in fine-tune epochs; the best file found within it wins")
    min_bits: int = knob(2, "search: then lower the winner's codebook bits one by one down to this while it meets "
                            "the target (0: keep --bits-conv / --bits-fc)")
    bits_ladder: str = knob("joint", "search: joint (conv and linear bits one fewer together), split (after the "
                                     "joint ladder, conv alone, then linear alone) or layer (after the split ladder, "
                                     "each layer alone, the most kept weights x bits first)")
    max_share_rate: float = knob(0.0, "search: last, raise the winner's --share-rate (doubling from 0.005) up to "
                                      "this while its file meets the target and shrinks (0: off)")
    min_raw_bits: int = knob(0, "search: last, re-code the winner's small tensors (--raw-dtype uint8) one bit "
                                "fewer at a time down to this while its file meets the target (1-8; 0: off)")
    speculate: str = knob("off", "frontier: on = climb each move's alternative (the staircase's other knob, a gallop "
                                 "step's bisection) at the same time, on another worker; its cost is counted")
    recover_epochs: int = knob(0, "recovery: full-training-split epochs that retrain the proxy search's best "
                                      "candidate (distilled from the input model) before the search goes on from it "
                                      "(0: off, the proxy's candidate ships)")
    recover_rounds: int = knob(2, "recovery: prune-recover rounds after the first recovery (each walks on from the "
                                  "recovered model, then recovers its best); a last recovery ends them")
    recover_step_epochs: int = knob(1, "recovery: whole-training-split epochs for a walk's step from a recovered "
                                       "model whose screen (no training) misses the target by less than the "
                                       "allowed drop (0: proxy fine-tunes instead)")
    recover_lr: float = knob(0.02, "recovery: peak learning rate (cosine over the recovery)")
    recover_distill: float = knob(1.0, "recovery: weight of distillation from the input model (0: labels only)")
    compress_penalty: float = knob(0.0, "recovery: weight of the pull of every kept weight towards its nearest "
                                        "shared value (compression-aware training; 0: off)")
    objective: str = knob("bytes", "search: what wins among the files that meet the target and the budgets: bytes "
                                   "(the smallest) or accuracy (the most accurate; give budgets)")
    max_bytes: int | None = knob(None, "budget: largest .slz file accepted, in bytes (a file over it is infeasible)",
                                 positive=True)
    max_params: int | None = knob(None, "budget: most parameters of the narrowed model (before sparsity)",
                                  positive=True)
    max_macs: int | None = knob(None, "budget: most multiply-accumulates for one image (the narrowed model's)",
                                positive=True)
    max_flash: int | None = knob(None, "budget: most flash of the C model (text + data, compiled with cc for each "
                                       "candidate: slimzip export --format c)", positive=True)
    max_ram: int | None = knob(None, "budget: most RAM of the C model (static buffers + stack bound, compiled)",
                               positive=True)
    max_latency_ms: float | None = knob(None, "budget: most milliseconds per image of the compiled C model on this "
                                              "CPU (batch 1, median of 25 runs)")

    def validate(self) -> "SearchConfig":
        if self.strategy not in STRATEGIES:
            raise unknown("search strategy", self.strategy, list(STRATEGIES))
        check_range("step", self.step, 1e-3, 1.0, high_open=True)
        if self.margin is not None:
            check_range("margin", self.margin, 0.0, 1.0)
        check_range("max channel ratio", self.max_channel_ratio, 0.0, 1.0, high_open=True)
        check_range("max sparsity", self.max_sparsity, 0.0, 1.0, high_open=True)
        check_range("refine", self.refine, 0, 10)
        check_range("min bits", self.min_bits, 0, 16)
        check_range("max share rate", self.max_share_rate, 0.0, 1.0)
        check_range("min raw bits", self.min_raw_bits, 0, 8)
        if self.speculate not in SPECULATE:
            raise unknown("speculate", self.speculate, list(SPECULATE))
        if self.objective not in OBJECTIVES:
            raise unknown("objective", self.objective, list(OBJECTIVES))
        if self.bits_ladder not in LADDERS:
            raise unknown("bits ladder", self.bits_ladder, list(LADDERS))
        self.validate_coding()  # the same checks as fixed-knob compression's
        self.validate_tuning()
        check_range("screen gap", self.screen_gap, 0.0, 1.0)
        check_range("short epochs", self.short_epochs, 0.0, 1.0)
        if self.scope not in ("global", "layer"):
            raise unknown("weight-pruning scope", self.scope, ["global", "layer"])
        check_range("calibration images", self.calibration_images, 0, 10_000_000)
        check_range("distillation weight", self.distill, 0.0, 100.0)
        check_range("finetune epochs", self.finetune_epochs, 0, 1000)
        if self.max_epochs is not None:
            check_range("max epochs", self.max_epochs, 0.0, 1e6)
        check_range("recover epochs", self.recover_epochs, 0, 1000)
        check_range("recover rounds", self.recover_rounds, 0, 100)
        check_range("recover step epochs", self.recover_step_epochs, 0, 1000)
        if not (self.recover_lr > 0 and self.recover_lr < 10):
            raise SlimzipError(f"recovery learning rate must be in (0, 10), got {self.recover_lr}")
        check_range("recovery distillation weight", self.recover_distill, 0.0, 100.0)
        check_range("compression penalty", self.compress_penalty, 0.0, 1e6)
        if self.teacher is not None and not (self.distill or (self.recover_epochs and self.recover_distill)):
            raise SlimzipError("--teacher is the model to distill from: give --distill a weight above 0 too")
        for name in BUDGETS:
            if getattr(self, name) is not None:
                check_range(name.replace("_", " "), getattr(self, name), 1e-3 if name == "max_latency_ms" else 1,
                            10 ** 15)
        if self.train_subset is not None and self.train_subset < 1:
            raise SlimzipError(f"train subset must be at least 1, got {self.train_subset}")
        return self

    @classmethod
    def fixed(cls, cfg: "CompressConfig") -> "SearchConfig":
        """The candidate pipeline's settings for one fixed-knob file (``slimzip.compress``): ``cfg``'s
        pruning, coding and fine-tuning knobs, no distillation, every training image."""
        shared = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(cfg)}
        return cls(**{name: getattr(cfg, name) for name in shared}).validate()

    def coding(self, bits: "tuple[int, int] | None" = None) -> CompressConfig:
        """The file's coding knobs as deep compression's config (``bits``: codebook bits, if not the config's)."""
        conv, fc = bits or (self.bits_conv, self.bits_fc)
        coding = {name: getattr(self, name) for name in CODING_FIELDS}
        return CompressConfig(**{**coding, "bits_conv": conv, "bits_fc": fc}, scope=self.scope, lr=self.lr,
                              centroid_epochs=0)


def candidate_bits(c: Candidate, cfg: SearchConfig) -> tuple[int, int]:
    """The codebook bits (conv, linear) of a candidate's file: a bits-ladder step's own, else the config's."""
    if (m := re.search(r":b(\d+)/(\d+)", c.key)) is not None:
        return int(m.group(1)), int(m.group(2))
    return cfg.bits_conv, cfg.bits_fc


def candidate_share_rate(c: Candidate, cfg: SearchConfig) -> float:
    """The share rate of a candidate's file: a rate-ladder step's own, else the config's."""
    return float(m.group(1)) if (m := re.search(r":x([0-9.e+-]+)", c.key)) is not None else cfg.share_rate


LayerBits = tuple[tuple[str, int], ...]  # codebook bits of single layers (weight name, bits), sorted by name


def candidate_layer_bits(c: Candidate) -> dict[str, int]:
    """The layers of a candidate's file whose codebook bits are not their kind's (``--bits-ladder layer``)."""
    if (m := re.search(r":l([^:]+)$", c.key)) is None:
        return {}
    return {name: int(bits) for name, bits in (pair.rsplit("=", 1) for pair in m.group(1).split(","))}


class RunCandidate(Protocol):
    """The candidate pipeline: warm-start from ``parent`` (None: the input model), move to ``knobs``,
    fine-tune, code into a file, decode it and validate. Returns the measurements (val_accuracy,
    file_bytes, params, macs, epochs, channels_removed); raises FloatingPointError if training diverges.
    ``layer_weights``: a finished candidate's shared layers, {weight name: (kept weights, bits by its kind)}."""

    def __call__(self, knobs: Knobs, parent: Candidate | None, *, key: str, epochs: float, rounds: int,
                 centroid_epochs: int, bits: tuple[int, int] | None = None, recover: bool = False,
                 layer_bits: LayerBits = (), share_rate: float | None = None) -> dict: ...

    def layer_weights(self, c: Candidate, bits: tuple[int, int]) -> dict[str, tuple[int, int]]: ...

@dataclass
class SearchResult:
    best: Candidate | None
    candidates: list[Candidate]  # every candidate of this search, in order (reused ones included)
    target: float
    margin: float
    strategy: str
    setup: tuple[float, float] = (0.0, 0.0)  # (epochs, wall seconds) made once before any candidate
    speculative: list[Candidate] = field(default_factory=list)  # run ahead, never asked for
    proxy_share: float = 1.0  # the proxy's training images / the whole training split's

    @property
    def epochs(self) -> float:
        """Proxy epochs (passes over the proxy's training images; recovery not included)."""
        return round(self.setup[0] + sum(c.epochs for c in (*self.candidates, *self.speculative)
                                         if not is_recovery(c)), 6)

    @property
    def recovery_epochs(self) -> float:
        """Recovery epochs (passes over the whole training split)."""
        return round(sum(c.epochs for c in self.candidates if is_recovery(c)), 6)

    @property
    def wall_seconds(self) -> float:
        """The candidates' own seconds added up (with workers, more than the search took on the clock)."""
        return self.setup[1] + sum(c.wall_seconds for c in (*self.candidates, *self.speculative))

    def cost(self) -> dict:
        wasted = {"speculative_candidates": len(self.speculative),
                  "speculative_epochs": round(sum(c.epochs for c in self.speculative), 6)} if self.speculative else {}
        recovery = {"recovery_epochs": self.recovery_epochs,
                    "recoveries": sum(is_recovery(c) for c in self.candidates)} if self.recovery_epochs else {}
        return {"strategy": self.strategy, "candidates": len(self.candidates), "epochs": self.epochs,
                "full_data_epochs": round(self.epochs * self.proxy_share + self.recovery_epochs, 6), **recovery,
                "wall_seconds": round(self.wall_seconds, 2),
                "failed": sum(c.status != "ok" for c in self.candidates), **wasted,
                **({"setup_epochs": round(self.setup[0], 6)} if self.setup[0] else {})}

class OutOfBudget(Exception):
    """Raised by ``Search.evaluate`` when a new candidate would not fit the search's epoch budget."""


class Search:
    """What a strategy sees: the config, the target, and ``evaluate``."""

    def __init__(self, cfg: SearchConfig, target: float, margin: float, journal: Journal, run: RunCandidate,
                 verbose: bool = True, slack: float = 0.0, pool: Any = None, setup_epochs: float = 0.0):
        self.cfg, self.target, self.margin, self.slack = cfg, target, margin, slack  # slack: baseline - target
        self.setup_epochs = setup_epochs  # spent before the first candidate (a layer profile)
        self.journal, self.run, self.verbose, self.pool = journal, run, verbose, pool  # pool: parallel.RayPool
        self.seen: dict[str, Candidate] = {}  # what the strategy asked for: the winner is one of these
        self.ahead: dict[str, Candidate] = {}  # run speculatively; counted, a candidate only once asked for
        self.recovering = False  # set once the search walks on from a recovered model (``_recover``)
        self.started, self.ran = time.perf_counter(), 0.0  # proxy epochs run in this process: its pace (``_eta``)

    def evaluate(self, knobs: Knobs, parent: Candidate | None, *, epochs: float, rounds: int = 1,
                 centroid_epochs: int = 0, reserved: bool = False, bits: tuple[int, int] | None = None,
                 speculative: bool = False, recover: bool = False, layer_bits: LayerBits = (),
                 share_rate: float | None = None) -> Candidate:
        """The candidate at ``knobs`` warm-started from ``parent``: from the journal if it was finished
        before, else run now (a diverged run is recorded as failed, not raised). Raises ``OutOfBudget``
        instead of running one that would not fit ``max_epochs`` (``reserved``: the winner's polish).
        ``bits``: the codebook bits (conv, linear) of this candidate's file, if not the config's;
        ``layer_bits``: single layers' bits, if not their kind's; ``share_rate``: the sharing's, if not the config's.
        ``speculative``: run ahead of the strategy's need; it counts in the cost but is one of the search's
        candidates (one the winner is chosen from) only when the strategy asks for it later.
        ``recover``: ``parent`` retrained at its own knobs for ``epochs`` passes over the whole training
        split (``recover_epochs``); outside the proxy's budget, counted as recovery epochs."""
        key = _key(knobs, parent, epochs, rounds, centroid_epochs, bits, recover, layer_bits, share_rate)
        if (done := self.journal.get(key)) is None:
            if not (reserved or recover):
                self._check_budget(epochs * max(rounds, 1) + centroid_epochs)
            done = self._run(key, knobs, parent, epochs, rounds, centroid_epochs, bits, recover, layer_bits,
                             share_rate)
        self._keep(key, done, speculative)
        return done

    def _keep(self, key: str, done: Candidate, speculative: bool) -> None:
        if not speculative:
            self.seen.setdefault(key, done)
        elif key not in self.seen:
            self.ahead.setdefault(key, done)

    def evaluate_many(self, requests: list[tuple[Knobs, Candidate | None, dict]]) -> list[Candidate]:
        """Independent candidates (none the parent of another), as ``evaluate(knobs, parent, **kwargs)``
        each: on the pool's workers at once if there is a pool, journaled in request order (so the
        journal is the same with any number of workers). A budget is checked for all of them first."""
        if self.pool is None:
            return [self.evaluate(knobs, parent, **kw) for knobs, parent, kw in requests]
        speculative = {}
        keyed = []
        for knobs, parent, kw in requests:
            kw = {"rounds": 1, "centroid_epochs": 0, **kw}
            key = _key(knobs, parent, kw["epochs"], kw["rounds"], kw["centroid_epochs"], kw.get("bits"),
                       kw.get("recover", False), kw.get("layer_bits", ()), kw.get("share_rate"))
            # a key some request asks for outright is not speculative
            speculative[key] = kw.pop("speculative", False) and speculative.get(key, True)
            keyed.append((key, knobs, parent, kw))
        done = {key: found for key, *_ in keyed if (found := self.journal.get(key)) is not None}
        todo = list({key: (key, knobs, parent, kw) for key, knobs, parent, kw in keyed if key not in done}.values())
        self._check_budget(sum(kw["epochs"] * max(kw["rounds"], 1) + kw["centroid_epochs"]
                               for *_, kw in todo if not kw.get("recover")))
        outcomes = self.pool.map([(knobs, parent, {"key": key, **kw}) for key, knobs, parent, kw in todo])
        for (key, knobs, parent, kw), outcome in zip(todo, outcomes):
            done[key] = self._record(key, knobs, parent, kw["epochs"], outcome)
        for key, *_ in keyed:
            self._keep(key, done[key], speculative[key])
        return [done[key] for key, *_ in keyed]

    def spent(self) -> float:
        """Proxy epochs spent so far (what ``max_epochs`` bounds)."""
        return self.setup_epochs + sum(c.epochs for c in (*self.seen.values(), *self.speculative())
                                       if not is_recovery(c))

    def speculative(self) -> list[Candidate]:
        """What ran ahead and was never asked for: the cost of speculation."""
        return [c for key, c in self.ahead.items() if key not in self.seen]

    def fits(self, epochs: float) -> bool:
        """Whether ``epochs`` more, and the winner's centroid fine-tune held in reserve, fit the budget."""
        return self.cfg.max_epochs is None or \
            self.spent() + epochs + self.cfg.centroid_epochs <= self.cfg.max_epochs + 1e-9

    def _check_budget(self, epochs: float) -> None:
        """A candidate starts only if its training fits the budget (``fits``; a screen's BN calibration, a
        few hundredths of an epoch, can overrun it)."""
        if not self.fits(epochs):
            raise OutOfBudget

    def _run(self, key: str, knobs: Knobs, parent: Candidate | None, epochs: float, rounds: int,
             centroid_epochs: int, bits: tuple[int, int] | None = None, recover: bool = False,
             layer_bits: LayerBits = (), share_rate: float | None = None) -> Candidate:
        t0 = time.perf_counter()
        kwargs = {"key": key, "epochs": epochs, "rounds": rounds, "centroid_epochs": centroid_epochs,
                  **({"bits": bits} if bits else {}), **({"recover": True} if recover else {}),
                  **({"layer_bits": layer_bits} if layer_bits else {}),
                  **({"share_rate": share_rate} if share_rate is not None else {})}
        if self.pool is not None:  # on a worker too, so that every candidate runs with the same threads
            return self._record(key, knobs, parent, epochs, self.pool.map([(knobs, parent, kwargs)])[0])
        try:
            outcome: dict | BaseException = self.run(knobs, parent, **kwargs)
        except CANDIDATE_FAILURES as e:
            outcome = e
        return self._record(key, knobs, parent, epochs, outcome, time.perf_counter() - t0)

    def _record(self, key: str, knobs: Knobs, parent: Candidate | None, epochs: float, outcome: dict | BaseException,
                seconds: float | None = None) -> Candidate:
        """Journal one candidate's outcome: its measurements, or the divergence it raised (any other
        exception from a worker is raised here, as it would have been in-process)."""
        common = dict(id=self.journal.next_id(), key=key, knobs=knobs, parent=parent.id if parent else None,
                      strategy=self.cfg.strategy)
        if isinstance(outcome, dict):
            m = dict(outcome)
            wall = m.pop("task_seconds", seconds or 0.0)
            ok = m["val_accuracy"] == m["val_accuracy"]  # NaN accuracy: the weights went non-finite
            candidate = Candidate(**common, status="ok" if ok else "failed", wall_seconds=wall,
                                  error=None if ok else "validation accuracy is NaN", **m)
        elif isinstance(outcome, CANDIDATE_FAILURES):
            candidate = Candidate(**common, epochs=getattr(outcome, "epochs", epochs), status="failed",
                                  wall_seconds=seconds or 0.0, error=str(outcome),
                                  channels_removed=parent.channels_removed if parent else 0)
        else:
            raise outcome
        self.journal.add(candidate)
        self.ran += 0.0 if is_recovery(candidate) else candidate.epochs
        over = over_budget(candidate, self.cfg) if candidate.status == "ok" else []
        note = f" (over {', '.join(over)})" if over else ""
        log(f"{_describe(candidate, self.target)}{note}  [{self._standing(candidate)}]", verbose=self.verbose)
        return candidate

    def _standing(self, latest: Candidate) -> str:
        """Where the search stands: candidates run, proxy epochs against the budget, the best file so far."""
        done = {**self.seen, latest.key: latest}
        best = smallest(list(done.values()), self.target, self.cfg)
        budget = f" of {self.cfg.max_epochs:g}" if self.cfg.max_epochs is not None else ""
        extra = 0.0 if latest.key in self.seen or is_recovery(latest) else latest.epochs
        spent = self.spent() + extra
        return (f"{len(done)} candidates, {spent:.2f}{budget} proxy epochs, best "
                f"{f'{best.file_bytes:,} B' if best else 'none yet'}{self._eta(spent)}")

    def _eta(self, spent: float) -> str:
        """With a budget: its time left at this run's pace so far (proxy epochs per second in this
        process; resumed candidates cost nothing, so the pace counts only what ran here)."""
        if self.cfg.max_epochs is None or self.ran <= 1e-9:
            return ""
        left = max(self.cfg.max_epochs - spent, 0.0) * (time.perf_counter() - self.started) / self.ran
        return f", budget spent in {left / 60:.0f} min at most" if left >= 60 else ", budget nearly spent"


def _key(knobs: Knobs, parent: Candidate | None, epochs: float, rounds: int, centroid_epochs: int,
         bits: tuple[int, int] | None, recover: bool = False, layer_bits: LayerBits = (),
         share_rate: float | None = None) -> str:
    """A candidate's identity in the journal: its knobs, its parent and its training (``:r``: a recovery,
    whose epochs are passes over the whole training split; ``:x``: its share rate; ``:l``: single layers'
    codebook bits)."""
    layers = ":l" + ",".join(f"{name}={b}" for name, b in layer_bits) if layer_bits else ""
    return (f"p{parent.id if parent else 0}:c{knobs.channel_ratio:g}:s{knobs.sparsity:g}:e{epochs:g}:n{rounds}"
            f":q{centroid_epochs}" + (f":b{bits[0]}/{bits[1]}" if bits else "")
            + (f":x{share_rate:g}" if share_rate is not None else "") + layers + (":r" if recover else ""))


def is_recovery(c: Candidate) -> bool:
    return c.key.endswith(":r")


def stage(c: Candidate) -> str:
    """What a candidate is, from its key: a screen (no training), a fine-tune, a recovery, the winner's
    centroid polish, a bits-ladder step (with its conv / linear codebook bits) or a rate-ladder step."""
    if is_recovery(c):
        return "recovery"
    if rate := re.search(r":x([0-9.e+-]+)(?::l[^:]+)?$", c.key):
        return f"share rate {rate[1]}"
    if bits := re.search(r":b(\d+)/(\d+)(?::l([^:]+))?$", c.key):
        return f"bits {bits[1]}/{bits[2]}" + (f", {bits[3].count('=')} layers apart" if bits[3] else "")
    if re.search(r":e0:n0:q[1-9]", c.key):
        return "centroids"
    return "screen" if ":e0:" in c.key else "fine-tune"


def _describe(c: Candidate, target: float) -> str:
    head = f"candidate {c.id} ({stage(c)}): channels {c.knobs.channel_ratio:.3f} sparsity {c.knobs.sparsity:.4f}"
    if c.status != "ok":
        return f"{head} FAILED ({c.error}), {c.epochs:g} epochs"
    verdict = "meets" if c.meets(target) else "misses"
    return (f"{head} -> val {pct(c.val_accuracy)} ({verdict} {pct(target)}), {c.file_bytes:,} B, "
            f"{c.epochs:g} epochs, {c.wall_seconds:.1f}s")

BUDGETS = {"max_bytes": "file_bytes", "max_params": "params", "max_macs": "macs", "max_flash": "flash_bytes",
           "max_ram": "ram_bytes", "max_latency_ms": "latency_ms"}  # budget -> what it bounds
DEVICE_BUDGETS = ("max_flash", "max_ram", "max_latency_ms")  # measured on the compiled C model
STRUCTURAL_BUDGETS = {"max_params": "params", "max_macs": "macs"}  # known from the narrowed model, before training
LOWERED_BY_BITS = {"max_bytes", "max_flash"}  # budgets a smaller codebook can still bring a file under


def broken_budgets(c: Candidate, cfg: SearchConfig | None) -> list[str]:
    """The budgets (``max_bytes`` ...) ``c`` breaks; a budget the candidate did not measure is broken."""
    if cfg is None:
        return []
    return [name for name, field in BUDGETS.items() if (limit := getattr(cfg, name)) is not None
            and (getattr(c, field) is None or getattr(c, field) > limit)]


REFUSED = "over --max-"  # how the error of a candidate refused by a params / MACs budget begins


def structural_budgets(cfg: SearchConfig) -> bool:
    """Whether ``cfg`` sets a params or MACs budget (checked on the narrowed model, before training)."""
    return any(getattr(cfg, name) is not None for name in STRUCTURAL_BUDGETS)


def structural_excess(cfg: SearchConfig, params: int, macs: int) -> str | None:
    """What a narrowed model with ``params`` and ``macs`` breaks of ``cfg``'s params / MACs budgets, said
    as a candidate's error (None: within them)."""
    have = {"params": params, "macs": macs}
    over = [f"--{name.replace('_', '-')} {limit:,} ({have[what]:,} {what.replace('macs', 'MACs')})"
            for name, what in STRUCTURAL_BUDGETS.items() if (limit := getattr(cfg, name)) is not None
            and have[what] > limit]
    return f"over {', '.join(over)} before any training" if over else None  # begins with REFUSED


def refused(c: Candidate) -> bool:
    """Whether ``c`` was refused for breaking a params or MACs budget (``OverBudgetError``)."""
    return c.status != "ok" and (c.error or "").startswith(REFUSED)


def over_budget(c: Candidate, cfg: SearchConfig | None) -> list[str]:
    """The budgets ``c`` breaks as their options say them (``--max-bytes 5,000``)."""
    return [f"--{name.replace('_', '-')} {getattr(cfg, name):,}" for name in broken_budgets(c, cfg)]


OBJECTIVES = {  # what the search optimizes among the candidates that meet the target and the budgets
    "bytes": lambda c: (c.file_bytes, -(c.val_accuracy or 0.0), c.id),  # the smallest file (ties: more accurate)
    "accuracy": lambda c: (-(c.val_accuracy or 0.0), c.file_bytes, c.id),  # the most accurate (ties: smaller)
}


def smallest(candidates: list[Candidate], threshold: float, cfg: SearchConfig | None = None) -> Candidate | None:
    """The best candidate that meets ``threshold`` and ``cfg``'s budgets: by ``cfg.objective`` (default the
    smallest file, ties: the more accurate)."""
    ok = [c for c in candidates if c.meets(threshold) and not broken_budgets(c, cfg)]
    return min(ok, key=OBJECTIVES[cfg.objective if cfg else "bytes"]) if ok else None

def run_search(cfg: SearchConfig, target: float, baseline: float, journal: Journal, run: RunCandidate,
               verbose: bool = True, pool: Any = None, setup: tuple[float, float] = (0.0, 0.0),
               proxy_share: float = 1.0) -> SearchResult:
    """Run ``cfg.strategy`` (the proxy search); with ``recover_epochs``, recover its best and go on from
    there (``_recover``); then fine-tune the winner's centroids and lower its bits (the same for every
    strategy). ``setup``: (epochs, wall seconds) spent before it on what every candidate shares, counted
    in its cost. ``proxy_share``: the proxy's training images over the whole split's (cost in full-data
    epochs).

    A target above the baseline's validation accuracy cannot be met by removing anything: the search
    evaluates only the input model as coded (no training) and ends, reporting it as the best found.
    If a strategy finds nothing that meets the target, the input model as coded is tried last."""
    cfg.validate()
    check_range("target accuracy", target, 0.0, 1.0)
    slack = max(baseline - target, 0.0)
    margin = cfg.margin if cfg.margin is not None else slack / 2
    search = Search(cfg, target, margin, journal, run, verbose, slack, pool, setup[0])
    if target > baseline:
        search.evaluate(Knobs(), None, epochs=0)
    else:
        start = None
        try:
            start = _structural_start(search)
            if start is None or start.meets(target + margin):
                STRATEGIES[cfg.strategy](search, start)
        except OutOfBudget:
            log(f"search budget of {cfg.max_epochs:g} epochs reached after {search.spent():.2f}", verbose=verbose)
        if cfg.recover_epochs:
            best = smallest(list(search.seen.values()), target, cfg)
            if best is None and start is not None and start.status == "ok":
                best = start  # a start a budget forced, short of the target: recovery is its chance
            _recover(search, best)
        best = smallest(list(search.seen.values()), target, cfg)
        if best is None:  # nothing removed is a candidate too
            search.evaluate(Knobs(), None, epochs=0)
        else:
            if cfg.centroid_epochs:
                search.evaluate(best.knobs, best, epochs=0, rounds=0, centroid_epochs=cfg.centroid_epochs,
                                reserved=True)
            for candidate in _ladder_bases(list(search.seen.values()), target, cfg):
                _lower_bits(search, candidate)
            if cfg.bits_ladder == "layer" and cfg.min_bits:
                _lower_layers(search, smallest(list(search.seen.values()), target, cfg))
            _raise_rate(search, smallest(list(search.seen.values()), target, cfg))
    candidates = list(search.seen.values())
    return SearchResult(smallest(candidates, target, cfg), candidates, target, margin, cfg.strategy, setup,
                        search.speculative(), proxy_share)


def _structural_start(search: Search) -> Candidate | None:
    """With a params or MACs budget, where every walk starts: the least channel ratio on the finest step
    whose narrowed model fits (bisection: a candidate over the budget is refused before any training,
    ``OverBudgetError``), fine-tuned ``finetune_epochs``. Walks only remove more, so nothing below it is
    ever trained. None: no such budget, or the input model fits; a failed candidate: nothing up to
    ``max_channel_ratio`` fits (the search then ends with the closest file)."""
    cfg = search.cfg
    if not structural_budgets(cfg):
        return None
    finest = cfg.step / 2 ** cfg.refine
    ratios = [round(i * finest, 6) for i in range(int(cfg.max_channel_ratio / finest + 1e-9) + 1)]

    def fits(i: int) -> bool:
        return not refused(search.evaluate(Knobs(ratios[i], 0.0), None, epochs=0))
    if fits(0):
        return None
    low, high = 0, len(ratios) - 1  # low: over the budget; high: fits, if anything does
    if not fits(high):
        log(f"no channel ratio up to {cfg.max_channel_ratio:g} fits the params / MACs budget", verbose=search.verbose)
        return search.evaluate(Knobs(ratios[high], 0.0), None, epochs=0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    log(f"the params / MACs budget: every walk starts at channel ratio {ratios[high]:g}", verbose=search.verbose)
    return search.evaluate(Knobs(ratios[high], 0.0), None, epochs=cfg.finetune_epochs)


def _recover(search: "Search", point: Candidate | None) -> None:
    """Progressive prune / recover / prune: retrain ``point`` (the proxy's best) on the whole training
    split for ``recover_epochs`` (distilled from the input model), then walk on from the recovered model
    with the strategy's own walks (``FOLLOW``: the grid's are the heuristic's), each step fine-tuned from
    its recovered parent (proxy rungs, then ``recover_step_epochs`` on the whole split for a step that
    comes close: ``strategies._try``) and kept only if its decoded file meets the target; recover the
    walk's end and repeat, ``recover_rounds`` times or until a walk moves no knob. The last point is
    recovered too. A recovery that still misses the target but gained accuracy (a point a budget forced,
    ``_structural_start``) is recovered again, while rounds are left."""
    cfg = search.cfg
    walk = STRATEGIES[FOLLOW.get(cfg.strategy, cfg.strategy)]
    recovered: Candidate | None = None
    for round_ in range(cfg.recover_rounds + 1):
        if point is None or (recovered is not None and point.id == recovered.id and point.meets(search.target)):
            return
        log(f"recovery {round_ + 1}: {cfg.recover_epochs:g} epochs on the whole training split from candidate "
            f"{point.id} (channels {point.knobs.channel_ratio:g}, sparsity {point.knobs.sparsity:g})",
            verbose=search.verbose)
        recovered = search.evaluate(point.knobs, point, epochs=cfg.recover_epochs, recover=True)
        if round_ == cfg.recover_rounds:
            return
        if not recovered.meets(search.target):
            if not _gained(recovered, point):
                return
            point = recovered  # short of the target, but gaining: once more
            continue
        search.recovering = True
        try:
            point = walk(search, recovered)
        except OutOfBudget:
            log(f"search budget of {cfg.max_epochs:g} epochs reached after {search.spent():.2f}",
                verbose=search.verbose)
            point = smallest([c for c in search.seen.values() if c.id > recovered.id], search.target, search.cfg)


def _gained(recovered: Candidate, point: Candidate) -> bool:
    """Whether a recovery made its point more accurate."""
    return recovered.status == "ok" and (recovered.val_accuracy or 0.0) > (point.val_accuracy or 0.0)


FOLLOW = {"grid": "heuristic"}  # the walks a strategy goes on with from a recovered model

Bits = tuple[int, int]  # codebook bits (conv, linear)


def _fewer(conv: int, fc: int) -> Callable[[Bits, int], Bits | None]:
    """A ladder step: ``conv`` / ``fc`` bits fewer, not below the floor (None: nothing left to lower)."""
    def step(bits: Bits, floor: int) -> Bits | None:
        lower = (max(bits[0] - conv, min(floor, bits[0])), max(bits[1] - fc, min(floor, bits[1])))  # never raised
        return lower if lower != bits else None
    return step


# the ladders a winner climbs down, one after the other: together, then (split) conv alone, linear alone
_SPLIT = (_fewer(1, 1), _fewer(1, 0), _fewer(0, 1))
LADDERS = {"joint": _SPLIT[:1], "split": _SPLIT, "layer": _SPLIT}  # layer: then each layer alone (``_lower_layers``)


def bits_ladder(cfg: SearchConfig) -> list[Bits]:
    """The codebook bits (conv, linear) the joint ladder tries after the search, one bit fewer each step,
    down to ``min_bits`` (none when it is 0)."""
    steps, bits = [], (cfg.bits_conv, cfg.bits_fc)
    while cfg.min_bits and (bits := LADDERS["joint"][0](bits, cfg.min_bits)) is not None:
        steps.append(bits)
    return steps


BITS_CANDIDATES = 3  # the smallest files that meet the target each try fewer bits (the smallest has no slack left)


def _smallest_few(candidates: list[Candidate], threshold: float, k: int,
                  cfg: SearchConfig | None = None) -> list[Candidate]:
    """The ``k`` smallest files meeting ``threshold`` among the pruned candidates (not bits-ladder steps);
    with ``cfg``, within its budgets but bytes and flash (fewer bits can still bring a file under those)."""
    ok = sorted((c for c in candidates if c.meets(threshold) and ":b" not in c.key and ":x" not in c.key
                 and set(broken_budgets(c, cfg)) <= LOWERED_BY_BITS),
                key=lambda c: (c.file_bytes, -(c.val_accuracy or 0.0), c.id))
    few: list[Candidate] = []
    for c in ok:  # one per knobs: the winner's centroid polish has the winner's model, so it is not tried again
        if all(c.knobs != f.knobs for f in few):
            few.append(c)
    return few[:k]


def _ladder_bases(candidates: list[Candidate], threshold: float, cfg: SearchConfig) -> list[Candidate]:
    """The files the bits ladder starts from: the ``BITS_CANDIDATES`` smallest that meet ``threshold``, and
    the smallest recovered one that does (a recovered model is a little larger than the proxy's files at
    the same knobs, since retrained weights share less well, but it holds accuracy to spare that fewer
    bits can spend)."""
    few = _smallest_few(candidates, threshold, BITS_CANDIDATES, cfg)
    recovered = _smallest_few([c for c in candidates if is_recovery(c)], threshold, 1, cfg)
    return few + [c for c in recovered if c not in few]  # at a proxy file's knobs too: another model


def _lower_bits(search: "Search", best: Candidate) -> None:
    """Bits as a knob: share a candidate's weights with smaller codebooks (k-means, centroid fine-tuning),
    one bit fewer per step, while its file meets the target (the first miss ends the ladder). The winner
    sits at the target with no accuracy to spare, so the few smallest files each try (``run_search``).
    ``--bits-ladder split``: from where the joint ladder ended, conv alone, then linear alone, the same way.
    A step that gives every layer the bits of a file already tried ends its ladder (conv bits of an MLP
    change nothing; its linear ladder after the joint one tries what the joint one missed), and so does
    one that leaves the file as large."""
    cfg = search.cfg
    last, size = (cfg.bits_conv, cfg.bits_fc), best.file_bytes
    kinds = {name: kind for name, (_, kind) in search.run.layer_weights(best, (0, 1)).items()}  # 0 conv, 1 linear

    def layers_at(bits: Bits) -> tuple[tuple[str, int], ...]:  # each layer's codebook bits at ``bits``
        return tuple(sorted((name, bits[kind]) for name, kind in kinds.items()))
    tried_bits = {layers_at(last)}
    for step in LADDERS[cfg.bits_ladder] if cfg.min_bits else ():
        while (bits := step(last, cfg.min_bits)) is not None and (layers := layers_at(bits)) not in tried_bits:
            tried_bits.add(layers)
            if (tried := _with_bits(search, best, bits)) is None or tried.file_bytes >= size:
                break
            last, size = bits, tried.file_bytes


def _lower_layers(search: "Search", winner: Candidate | None) -> None:
    """``--bits-ladder layer``, after the other ladders: the smallest file's layers one at a time, one bit
    fewer per step while the file meets the target and shrinks (a layer's first miss moves on to the next
    layer), the layers with the most kept weights x bits first. Each layer ends at the fewest bits its
    sensitivity allows, where the kind's ladder stops at its most sensitive layer."""
    if winner is None:
        return
    pruned = _shared_from(search, winner)
    conv, fc = candidate_bits(winner, search.cfg)
    layers = search.run.layer_weights(pruned, (conv, fc))
    kind = {name: bits for name, (_, bits) in layers.items()}
    bits, size = dict(kind), winner.file_bytes
    named = [n for n in layers if not set(n) & set(":,=")]  # a name the journal key can hold (every usual one)
    for name in sorted(named, key=lambda n: (-layers[n][0] * kind[n], n)):
        while bits[name] > search.cfg.min_bits:
            trial = {**bits, name: bits[name] - 1}
            apart = tuple(sorted((n, b) for n, b in trial.items() if b != kind[n]))
            if (tried := _with_bits(search, pruned, (conv, fc), apart)) is None or tried.file_bytes >= size:
                break
            bits, size = trial, tried.file_bytes


RATE_START = 0.005  # the rate ladder's first share rate (``--max-share-rate``); each step doubles it


def rate_ladder(cfg: SearchConfig) -> list[float]:
    """The share rates the rate ladder tries after the bits ladders: doubling from ``RATE_START`` (or from twice
    ``share_rate``) up to ``max_share_rate`` (none when that is not above ``share_rate``)."""
    rates, rate = [], max(2 * cfg.share_rate, RATE_START)
    if cfg.max_share_rate > cfg.share_rate:
        while rate <= cfg.max_share_rate + 1e-12:
            rates.append(rate)
            rate *= 2
    return rates


def _raise_rate(search: "Search", winner: Candidate | None) -> None:
    """``--max-share-rate``, after the bits ladders: the smallest file's pruned model shared again (same bits,
    same centroid fine-tune) with entropy-constrained sharing at each of ``rate_ladder``'s rates while the file
    meets the target and shrinks (the first miss ends the ladder)."""
    cfg = search.cfg
    if winner is None:
        return
    pruned, size = _shared_from(search, winner), winner.file_bytes
    bits = candidate_bits(winner, cfg) if ":b" in winner.key else None
    layers = tuple(sorted(candidate_layer_bits(winner).items()))
    for rate in rate_ladder(cfg):
        if (tried := _with_bits(search, pruned, bits, layers, rate)) is None or tried.file_bytes >= size:
            return
        size = tried.file_bytes


def _shared_from(search: "Search", c: Candidate) -> Candidate:
    """The pruned candidate a centroid polish or a bits- or rate-ladder step shared its weights from (else ``c``)."""
    if stage(c) != "centroids" and not stage(c).startswith(("bits", "share rate")):
        return c
    return next(p for p in search.seen.values() if p.id == c.parent)


def _with_bits(search: "Search", best: Candidate, bits: Bits | None, layer_bits: LayerBits = (),
               share_rate: float | None = None) -> Candidate | None:
    """``best`` shared with ``bits`` (and ``layer_bits``, ``share_rate``), if it meets the target (None: it
    misses, or the budget is spent)."""
    try:
        tried = search.evaluate(best.knobs, best, epochs=0, rounds=0, centroid_epochs=search.cfg.centroid_epochs,
                                bits=bits, layer_bits=layer_bits, share_rate=share_rate)
    except OutOfBudget:
        return None
    return tried if tried.meets(search.target) else None


def artifact_name(key: str) -> str:
    """A short file name for a candidate's artifacts."""
    return hashlib.sha1(key.encode()).hexdigest()[:16]
