import pytest
import torch

from slimzip.errors import SlimzipError
from slimzip.models import create_model
from slimzip.trainer import SCHEDULES, TrainConfig, bn_l1_penalty, distillation, evaluate, fit, lr_at

FAST = dict(epochs=2, batch_size=100, lr=0.05, precision="fp32")


def _model(name="lenet-300-100", seed=0):
    torch.manual_seed(seed)
    return create_model(name)


def test_schedules_peak_at_the_learning_rate_and_end_low():
    cfg = TrainConfig(epochs=10, lr=1.0)
    for name in SCHEDULES:
        lrs = [lr_at(s, 100, TrainConfig(epochs=10, lr=1.0, schedule=name)) for s in range(1000)]
        assert min(lrs) >= 0 and max(lrs) == pytest.approx(1.0, abs=1e-2), name
        if name != "constant":
            assert lrs[-1] < 0.05 * max(lrs), name  # every decaying schedule ends low
    assert lr_at(0, 100, cfg) == 1.0 and lr_at(999, 100, cfg) < 1e-4
    step = TrainConfig(epochs=10, lr=1.0, schedule="step", milestones=(0.5, 0.75))
    assert [lr_at(s, 100, step) for s in (0, 499, 500, 749, 750)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    warm = TrainConfig(epochs=10, lr=1.0, warmup_epochs=1)
    assert lr_at(0, 100, warm) == pytest.approx(0.01) and lr_at(99, 100, warm) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1), dict(momentum=1.0), dict(schedule="nope"),
                                 dict(label_smoothing=1.0), dict(precision="fp8"), dict(patience=-1)])
def test_bad_config_is_a_user_error(bad):
    with pytest.raises(SlimzipError):
        TrainConfig(**bad).validate()


def test_bn_l1_penalty_gradient_is_lambda_sign_gamma():
    model = create_model("lenet-5-bn")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-1, 1)
    bn_l1_penalty(1e-3)(model, None, None, None).backward()
    bn = model.features[1]
    assert torch.allclose(bn.weight.grad, 1e-3 * torch.sign(bn.weight))


def test_fit_learns_and_hooks_run_every_step(mnist_loaders):
    model = _model()
    calls = []
    state = fit(model, mnist_loaders.train, mnist_loaders.val, TrainConfig(**FAST),
                after_step=[lambda m: calls.append(1)], verbose=False)
    assert len(calls) == 2 * len(mnist_loaders.train)
    assert state.history[1]["train_loss"] < state.history[0]["train_loss"]
    assert evaluate(model, mnist_loaders.val)[1] > 0.8


def test_after_step_hook_can_hold_a_mask(mnist_loaders):
    """Mask enforcement comes through after_step: a pruned weight stays exactly zero through momentum."""
    model = _model()
    mask = (torch.rand_like(model.classifier.weight) > 0.5).float()

    def hold(m):
        with torch.no_grad():
            m.classifier.weight.mul_(mask)

    hold(model)
    fit(model, mnist_loaders.train, None, TrainConfig(**FAST), after_step=[hold], verbose=False)
    assert torch.all(model.classifier.weight[mask == 0] == 0)


class Kill(Exception):
    pass


def test_resume_after_kill_equals_an_uninterrupted_run(mnist_loaders, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 3})
    straight = _model()
    fit(straight, mnist_loaders.train, mnist_loaders.val, cfg, run_dir=tmp_path / "a", verbose=False)

    steps = []

    def killer(m):
        steps.append(1)
        if len(steps) == len(mnist_loaders.train) + 5:  # dies 5 steps into the second epoch
            raise Kill

    resumed = _model()
    with pytest.raises(Kill):
        fit(resumed, mnist_loaders.train, mnist_loaders.val, cfg, after_step=[killer], run_dir=tmp_path / "b",
            verbose=False)
    resumed = _model(seed=123)  # a fresh process: weights come from the run directory, not from here
    state = fit(resumed, mnist_loaders.train, mnist_loaders.val, cfg, run_dir=tmp_path / "b", verbose=False)
    assert [r["epoch"] for r in state.history] == [1, 2, 3]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_resume_refuses_a_different_config(mnist_loaders, tmp_path):
    fit(_model(), mnist_loaders.train, None, TrainConfig(**{**FAST, "epochs": 1}), run_dir=tmp_path, verbose=False)
    with pytest.raises(SlimzipError, match="different training config"):
        fit(_model(), mnist_loaders.train, None, TrainConfig(**{**FAST, "lr": 0.01}), run_dir=tmp_path, verbose=False)


def test_early_stopping_stops_and_keeps_the_best_epoch(mnist_loaders):
    steps = []

    def hurt(m):  # after the first epoch, every step scrambles the classifier: validation loss is worse
        steps.append(1)
        if len(steps) > len(mnist_loaders.train):
            with torch.no_grad():
                noise = torch.randn(m.classifier.weight.shape, generator=torch.Generator().manual_seed(0))
                m.classifier.weight.copy_(noise)

    cfg = TrainConfig(**{**FAST, "epochs": 8, "patience": 2})
    model = _model()
    state = fit(model, mnist_loaders.train, mnist_loaders.val, cfg, after_step=[hurt], verbose=False)
    losses = [r["val_loss"] for r in state.history]
    assert state.stopped_early and len(losses) == 3 and losses[0] < min(losses[1:])
    assert evaluate(model, mnist_loaders.val)[0] == pytest.approx(losses[0], rel=1e-5)


def test_keep_last_ends_on_the_last_epoch_and_no_shuffle_trains_in_stored_order(mnist_loaders):
    steps, seen = [], []

    def hurt(m):  # as above: epochs after the first make validation loss worse
        steps.append(1)
        if len(steps) > len(mnist_loaders.train):
            with torch.no_grad():
                noise = torch.randn(m.classifier.weight.shape, generator=torch.Generator().manual_seed(0))
                m.classifier.weight.copy_(noise)

    model = _model()
    cfg = TrainConfig(**{**FAST, "epochs": 8, "patience": 2, "restore_best": False})
    state = fit(model, mnist_loaders.train, mnist_loaders.val, cfg, after_step=[hurt], verbose=False)
    losses = [r["val_loss"] for r in state.history]
    assert state.stopped_early and len(losses) == 3 and losses[0] < min(losses[1:])
    assert evaluate(model, mnist_loaders.val)[0] == pytest.approx(losses[-1], rel=1e-5)  # the last, not the best
    per_epoch = len(mnist_loaders.train)
    for shuffle in (False, True):
        seen.clear()
        fit(_model(), mnist_loaders.train, None, TrainConfig(**{**FAST, "epochs": 2, "shuffle": shuffle}),
            loss_terms=[lambda m, x, out, y: seen.append(y[:8].tolist()) or 0.0], verbose=False)
        assert (seen[0] == seen[per_epoch] == mnist_loaders.train.y[:8].tolist()) == (not shuffle)
    assert mnist_loaders.train.shuffle  # the caller's loader is left as it was


@pytest.mark.parametrize("milestones", [(), (0.5, 1.0), (0.75, 0.5), (0.0,)])
def test_bad_milestones_are_refused(milestones):
    with pytest.raises(SlimzipError, match="milestones"):
        TrainConfig(milestones=milestones).validate()


def test_divergence_raises(mnist_loaders):
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(_model(), mnist_loaders.train, None, TrainConfig(epochs=1, batch_size=100, lr=1e6, precision="fp32"),
            verbose=False)


def test_distillation_is_zero_for_the_teacher_itself_and_pulls_a_student_towards_it():
    teacher, student = _model(seed=0), _model(seed=1)
    x = torch.randn(16, 1, 28, 28)
    term = distillation(teacher, weight=1.0, temperature=4.0)
    assert term(teacher, x, teacher(x), None).item() == pytest.approx(0.0, abs=1e-6)
    gap = term(student, x, student(x), None)
    assert gap.item() > 0
    gap.backward()
    assert all(p.grad is None for p in teacher.parameters()) and any(p.grad is not None for p in student.parameters())


def test_recalibrate_bn_replaces_stale_statistics_with_the_data_s():
    from slimzip.trainer import recalibrate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    x = torch.randn(64, 4) * 2 + 1
    batches = [(x[:32], None), (x[32:], None), (torch.full((32, 4), 1e3), None)]
    model.eval()
    assert recalibrate_bn(model, batches, 64) == 64  # stops after the 64 images asked for
    h = model[0](x).detach()
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, (h[:32].var(0) + h[32:].var(0)) / 2, atol=1e-4)
    assert not model.training and bn.momentum == 0.1
    assert recalibrate_bn(torch.nn.Linear(2, 2), batches, 64) == 0


def test_a_1x1_stride_2_convolution_trains_without_channels_last_on_a_cpu():
    """PyTorch 2.13's CPU backward of a 1x1 stride-2 conv in channels_last crashes the process; slimzip
    trains such a model in NCHW (the training below would abort or hang otherwise)."""
    from slimzip.trainer import TrainConfig, fit, use_channels_last

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 1, 2, bias=False), torch.nn.BatchNorm2d(48), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(48, 10))
    assert not use_channels_last(net, True, torch.device("cpu"))
    assert use_channels_last(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2)), True, torch.device("cpu"))
    x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
    state = fit(net, (x, y), None, TrainConfig(epochs=1, batch_size=64, precision="fp32"), verbose=False)
    assert state.epoch == 1
