"""Channel pruning: a narrowed model equals the original with the same channels zeroed, and its size is
what the plan says, on every registered model and on models slimzip has never seen."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimzip.data import get_dataset_spec
from slimzip.errors import SlimzipError
from slimzip.measure import measure
from slimzip.models import MODELS, create_model
from slimzip.structured import (IMPORTANCES, ChannelPruner, apply_plan, compose_plans, plan_cost, widths,
                                zero_channels_hooks)


class Branchy(nn.Module):
    """Depthwise and grouped convs, a residual add, a concatenation of two sources, flatten into Linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw, self.bn_dw = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.side = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(40, 24, 3, stride=2, padding=1)
        self.fc1, self.fc2 = nn.Linear(24 * 8 * 8, 32), nn.Linear(32, 10)

    def forward(self, x):
        s = F.relu(self.bn(self.stem(x)))
        r = s + self.pw(F.relu(self.bn_dw(self.dw(s))))
        c = torch.cat([F.relu(self.grouped(r)), F.relu(self.side(x))], 1)
        return self.fc2(F.relu(self.fc1(torch.flatten(F.relu(self.head(c)), 1))))


class TwoTowers(nn.Module):
    """Two branches added, then concatenated with the input: coupled groups across an add and a cat."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 12, 3, padding=1), nn.Conv2d(3, 12, 5, padding=2)
        self.bn_a, self.bn_b = nn.BatchNorm2d(12), nn.BatchNorm2d(12)
        self.mix = nn.Conv2d(15, 20, 3, padding=1)
        self.fc = nn.Linear(20, 5)

    def forward(self, x):
        y = F.relu(self.bn_a(self.a(x)) + self.bn_b(self.b(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.mix(torch.cat([y, x], 1))), 1).flatten(1))


CUSTOM = {"branchy": (Branchy, (3, 16, 16)), "two-towers": (TwoTowers, (3, 12, 12))}


def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0, 1)
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def _check(model, shape, pruner):
    plan = pruner.fit(model, shape).plan_
    narrowed = apply_plan(copy.deepcopy(model), plan, shape).eval()
    x = torch.randn(2, *shape)
    hooks = zero_channels_hooks(model, plan, shape, pruner.groups_)
    with torch.no_grad():
        assert torch.allclose(narrowed(x), model(x), atol=1e-4, rtol=1e-4)
    for h in hooks:
        h.remove()
    cost = measure(narrowed, shape)
    assert plan_cost(model, plan, shape, pruner.groups_) == (cost.params, cost.macs)
    assert cost.params < measure(model, shape).params
    assert all(w >= 1 for w in widths(narrowed).values())
    return plan, narrowed


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_narrows_exactly(name):
    torch.manual_seed(0)
    model = _randomise_bn(create_model(name))
    shape = get_dataset_spec(MODELS[name].dataset).image_shape
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    pruner = ChannelPruner(importance="bn_scale" if has_bn else "l1", channel_ratio=0.4,
                           scope="global" if has_bn else "layer")
    plan, narrowed = _check(model, shape, pruner)
    rebuilt = apply_plan(create_model(name), plan, shape)  # a name and a plan rebuild the architecture
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in narrowed.parameters()]


@pytest.mark.parametrize("name", sorted(CUSTOM))
@pytest.mark.parametrize("importance, scope", [("l1", "layer"), ("l2", "global"), ("random", "layer")])
def test_models_slimzip_has_never_seen(name, importance, scope):
    torch.manual_seed(0)
    cls, shape = CUSTOM[name]
    _check(_randomise_bn(cls()), shape, ChannelPruner(importance=importance, channel_ratio=0.5, scope=scope))


def test_layer_scope_removes_the_ratio_of_every_group_and_keeps_the_best():
    model = _randomise_bn(create_model("vgg11"))
    pruner = ChannelPruner(importance="bn_scale", channel_ratio=0.25, scope="layer").fit(model, (3, 32, 32))
    for root, kept in pruner.plan_.items():
        scores = pruner.scores_[root]
        assert len(kept) == len(scores) - int(0.25 * len(scores))
        assert scores[kept].min() >= scores[[i for i in range(len(scores)) if i not in kept]].max()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_steps_counted_against_the_first_widths_end_where_one_step_does(scope):
    """A gradual prune (each step's ratio of the widths before the first step) keeps exactly the channels
    one step keeps when the scores do not change between steps (BN scales, no training)."""
    model, shape = _randomise_bn(create_model("vgg11")).eval(), (3, 32, 32)
    one = ChannelPruner(channel_ratio=0.8, scope=scope).fit(model, shape).plan_
    stepped, plan, first = copy.deepcopy(model), None, widths(model)
    for ratio in (0.5, 0.7, 0.8):
        pruner = ChannelPruner(channel_ratio=ratio, scope=scope, base_widths=first).fit(stepped, shape)
        stepped, plan = pruner.transform(stepped, shape), compose_plans(plan, pruner.plan_)
    assert plan == one and widths(stepped) == widths(apply_plan(copy.deepcopy(model), one, shape))


def test_transform_applies_the_fitted_plan_and_a_json_plan_narrows_the_same():
    model, shape = _randomise_bn(create_model("resnet20")).eval(), (3, 32, 32)
    with pytest.raises(SlimzipError, match="call fit first"):
        ChannelPruner().transform(model, shape)
    pruner = ChannelPruner(importance="l1", channel_ratio=0.5).fit(model, shape)
    plan = json.loads(json.dumps(pruner.plan_))
    a, b = pruner.transform(copy.deepcopy(model), shape), apply_plan(copy.deepcopy(model), plan, shape)
    assert widths(a) == widths(b) and widths(a) != widths(model)
    x = torch.randn(2, *shape)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("training", [True, False])
def test_tracing_leaves_the_train_mode_and_bn_statistics_as_they_were(training):
    model, shape = create_model("lenet-5-bn").train(training), (1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = ChannelPruner(importance="l1").fit(model, shape)
    plan_cost(model, pruner.plan_, shape)
    assert all(m.training == training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_min_channels_and_round_to():
    model = _randomise_bn(create_model("vgg11"))
    with torch.no_grad():
        model.features[1].weight.zero_()  # a layer whose scales are all zero: global pruning would empty it
    plan = ChannelPruner(channel_ratio=0.3, min_channels=4, round_to=8).fit(model, (3, 32, 32)).plan_
    assert all(len(k) >= 4 and len(k) % 8 == 0 for k in plan.values())
    assert len(plan["features.0"]) == 8


@pytest.mark.parametrize("bad", [dict(channel_ratio=1.0), dict(channel_ratio=-0.1), dict(importance="magic"),
                                 dict(scope="block"), dict(min_channels=0)])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(SlimzipError):
        ChannelPruner(**bad).fit(create_model("lenet-5-bn"), (1, 28, 28))


def test_bn_scale_falls_back_to_filter_norm_per_group_and_activation_criteria_need_data():
    model = create_model("lenet-5")  # no BatchNorm anywhere: every group is scored by its filters' L1 norm
    pruner = ChannelPruner(importance="bn_scale", channel_ratio=0.5).fit(model, (1, 28, 28))
    assert set(pruner.criteria_.values()) == {"l1"}
    l1 = ChannelPruner(importance="l1", channel_ratio=0.5, scope="layer").fit(model, (1, 28, 28))
    assert pruner.plan_ == l1.plan_  # fallback groups lose the ratio each, as a per-layer L1 prune does
    with_bn = ChannelPruner(importance="bn_scale").fit(create_model("lenet-5-bn"), (1, 28, 28))
    assert set(with_bn.criteria_.values()) == {"bn_scale"}
    with pytest.raises(SlimzipError, match="activations"):
        ChannelPruner(importance="dropnet").fit(create_model("lenet-5"), (1, 28, 28))
    assert {"bn_scale", "l1", "l2", "random", "dropnet", "dropnet_max", "apoz"} <= set(IMPORTANCES)


def test_untraceable_model_is_a_user_error():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) if x.sum().item() > 1e9 else None  # returns no tensor

    with pytest.raises(SlimzipError, match="cannot trace"):
        ChannelPruner(importance="l1").fit(Weird(), (4,))


@pytest.mark.parametrize("name", ["lenet-300-100", "lenet-5", "vgg11", "resnet20"])
def test_dead_channels_are_removed_without_changing_outputs(name):
    from slimzip.structured import dead_channel_plan

    torch.manual_seed(0)
    model = _randomise_bn(create_model(name))
    shape = get_dataset_spec(MODELS[name].dataset).image_shape
    with torch.no_grad():  # nothing reads the first third of every layer's input channels
        for m in list(model.modules())[1:]:
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[1] > 3:
                m.weight[:, : m.weight.shape[1] // 3] = 0
    plan = dead_channel_plan(model, shape)
    assert plan and all(len(k) >= 1 for k in plan.values())
    narrowed = apply_plan(copy.deepcopy(model), plan, shape).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(narrowed(x), model(x), atol=1e-5)
    assert measure(narrowed, shape).params < measure(model, shape).params


class _TiedBlock(torch.nn.Module):
    """A residual block as built (BatchNorm scales all 1: tied), the last BN zero-initialised as timm does."""

    def __init__(self, c: int, zero_last: bool):
        super().__init__()
        self.a, self.bn = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)
        self.b, self.bn2 = torch.nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(2 * c)
        self.c, self.bn3 = torch.nn.Conv2d(2 * c, c, 1, bias=False), torch.nn.BatchNorm2d(c)
        if zero_last:
            torch.nn.init.zeros_(self.bn3.weight)

    def forward(self, x):
        y = torch.relu(self.bn2(self.b(torch.relu(self.bn(self.a(x))))))
        return torch.relu(x + self.bn3(self.c(y)))


class _TiedNet(torch.nn.Module):
    def __init__(self, zero_last: bool):
        super().__init__()
        self.stem, self.bn = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16)
        self.blocks = torch.nn.Sequential(_TiedBlock(16, zero_last), _TiedBlock(16, zero_last))
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.blocks(torch.relu(self.bn(self.stem(x)))).mean((2, 3)))


@pytest.mark.parametrize("zero_last", [False, True])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
def test_tied_scales_lose_the_ratio_asked_and_say_so(ratio, zero_last):
    from slimzip.structured import default_channel_pruner

    torch.manual_seed(0)
    model = _TiedNet(zero_last)
    pruner = default_channel_pruner(model, ratio, "auto")
    with pytest.warns(UserWarning, match="scores the same"):
        pruner.fit(model, (3, 8, 8))
    total = sum(len(s) for s in pruner.scores_.values())
    removed = total - sum(len(k) for k in pruner.plan_.values())
    assert abs(removed - ratio * total) <= len(pruner.plan_)  # within one channel per group
    narrowed = pruner.transform(model, (3, 8, 8))
    assert narrowed(torch.randn(2, 3, 8, 8)).shape == (2, 10)
