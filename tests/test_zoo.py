"""Model zoo library: batched == loop, hyperparameters per member, divergence, θ0, load()."""

from __future__ import annotations

import pytest
import torch

import asymspec
from asymspec.errors import UserError
from asymspec.zoo import ZooConfig, ZooData, load, train_zoo
from asymspec.zoo.augment import AugmentConfig, apply, draw_epoch
from asymspec.zoo.hparams import TABLE13, resolve, sample_member
from asymspec.zoo.optim import StackedAdamW
from asymspec.zoo.plan import MemberPlan, plan_members
from asymspec.zoo.train import TrainSettings, train_members

TINY_STANDARD = {"name": "tiny_std", "seed": 0, "model": {
    "family": "resnet", "depth": 8, "base_width": 6, "norm": "layernorm", "in_channels": 1,
    "input_size": 12}}
TINY_WASYM = {**TINY_STANDARD, "name": "tiny_wasym",
              "asymmetry": {"seed": 0, "w_asym": {"nfix": 3, "kappa": 2.0}}}
TINY_HPARAMS = {"epochs": {"dist": "randint", "low": 2, "high": 4}}


def tiny_data(n: int = 64) -> ZooData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 32, 1, 12, 12, generator=g)
    y = (x[:, 0, :6].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :6].mean((1, 2)) > 0).long()
    return ZooData.from_tensors(x[:n], y[:n], x[n:], y[n:], num_classes=4)


def tiny_settings(**kw) -> TrainSettings:
    return TrainSettings(batch_size=32, peak_epoch=1, **kw)


def tiny_config(members: int = 4, shard_size: int = 2, variants=("standard", "w_asym"),
                **kw) -> ZooConfig:
    specs = {"standard": TINY_STANDARD, "w_asym": TINY_WASYM}
    variants = {v: asymspec.load_spec(specs[v]) for v in variants}
    return ZooConfig(variants, members, shard_size, seed=3,
                     hparams=kw.pop("hparams", dict(TINY_HPARAMS)),
                     settings=tiny_settings(path=kw.pop("path", "auto")),
                     dataset={"name": "synthetic"}, **kw)


def _ir(spec):
    return asymspec.compile_ir(asymspec.load_spec(spec))


def test_batched_equals_loop_three_members():
    plans = plan_members(1, range(3), resolve(TINY_HPARAMS))
    assert len({p.hparams["epochs"] for p in plans}) > 1, "want members of different lengths"
    ir, data = _ir(TINY_WASYM), tiny_data()
    loop = train_members(ir, plans, data, tiny_settings(path="loop"))
    batched = train_members(ir, plans, data, tiny_settings(path="batched", chunk_members=3))
    assert (loop.path, batched.path) == ("loop", "batched")
    torch.testing.assert_close(batched.final, loop.final, rtol=1e-4, atol=1e-4)
    for a, b, p in zip(loop.records, batched.records, plans):
        assert a["steps"] == b["steps"] == 2 * p.hparams["epochs"]
        assert len(a["train_loss_history"]) == len(b["train_loss_history"]) == p.hparams["epochs"]
        torch.testing.assert_close(torch.tensor(a["train_loss_history"]),
                                   torch.tensor(b["train_loss_history"]), rtol=1e-4, atol=1e-4)
        assert a["init_sha256"] == b["init_sha256"]
    # frozen W-Asym entries stay exactly at their fixed values (weight decay included)
    fixed = ~loop.layout.trainable
    assert fixed.any()
    init = torch.stack([loop.layout.flatten(asymspec.nn.emit(ir, p.init_seed)) for p in plans])
    for res in (loop, batched):
        assert torch.equal(res.final[:, fixed], init[:, fixed])
        assert not torch.equal(res.final[:, ~fixed], init[:, ~fixed])


def test_member_result_does_not_depend_on_its_chunk():
    plans = plan_members(1, range(3), resolve(TINY_HPARAMS))
    ir, data = _ir(TINY_STANDARD), tiny_data()
    together = train_members(ir, plans, data, tiny_settings(path="batched", chunk_members=3))
    alone = train_members(ir, plans[1:2], data, tiny_settings(path="batched"))
    torch.testing.assert_close(together.final[1], alone.final[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["loop", "batched"])
def test_hparams_honoured_lr0_and_divergence(path):
    ir, data = _ir(TINY_STANDARD), tiny_data()
    hp = {"lr": 0.01, "weight_decay": 0.01, "label_smoothing": 0.1, "epochs": 3}
    plans = [MemberPlan(0, 11, 21, {**hp, "lr": 0.0}),
             MemberPlan(1, 12, 22, {**hp, "epochs": 2}),
             MemberPlan(2, 13, 23, {**hp, "lr": 1e30})]
    res = train_members(ir, plans, data, tiny_settings(path=path))
    init = torch.stack([res.layout.flatten(asymspec.nn.emit(ir, p.init_seed)) for p in plans])
    assert torch.equal(res.final[0], init[0])  # lr 0: nothing moves, weight decay included
    assert res.records[0]["diverged"] is None and res.records[0]["steps"] == 6
    assert res.records[1]["steps"] == 4 and len(res.records[1]["train_loss_history"]) == 2
    assert not torch.equal(res.final[1], init[1])
    div = res.records[2]["diverged"]
    assert div is not None and div["step"] >= 1 and div["epoch"] == div["step"] // 2
    assert res.records[2]["steps"] == div["step"]


def test_stacked_adamw_matches_torch():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(2, 7, generator=g)
    grads = [torch.randn(2, 7, generator=g) for _ in range(3)]
    lr, wd = torch.tensor([0.1, 0.02]), torch.tensor([0.01, 0.3])
    flat = p0.clone()
    opt = StackedAdamW(flat, torch.ones(7, dtype=torch.bool), lr, wd)
    for gr in grads:
        opt.step(flat, gr, torch.ones(2), torch.tensor([True, True]))
    for m in range(2):
        p = torch.nn.Parameter(p0[m].clone())
        ref = torch.optim.AdamW([p], lr=float(lr[m]), weight_decay=float(wd[m]))
        for gr in grads:
            p.grad = gr[m].clone()
            ref.step()
        torch.testing.assert_close(flat[m], p.detach(), rtol=1e-6, atol=1e-6)


def test_hparams_table13_deterministic():
    d = resolve(None)
    assert d == TABLE13
    draws = [sample_member(d, 0, i) for i in range(300)]
    assert draws[5] == sample_member(d, 0, 5) and draws[5] != sample_member(d, 1, 5)
    lr = torch.tensor([h["lr"] for h in draws])
    assert 0.005 <= lr.min() and lr.max() <= 0.5 and lr.log10().std() > 0.4
    wd = torch.tensor([h["weight_decay"] for h in draws])
    assert 1e-5 <= wd.min() and wd.max() <= 0.1
    assert all(0 <= h["label_smoothing"] <= 0.2 for h in draws)
    epochs = {h["epochs"] for h in draws}
    assert min(epochs) == 10 and max(epochs) == 40 and all(isinstance(e, int) for e in epochs)
    with pytest.raises(UserError, match="hparams.lr"):
        resolve({"lr": {"dist": "loguniform", "low": 0, "high": 1}})


def test_augmentation_flip_translate_cutout():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    fill = torch.tensor([-1.0])
    one = lambda *a: torch.tensor([a])  # noqa: E731
    flip = apply(x, torch.tensor([True]), one(1, 1), one(0, 0),
                 AugmentConfig(True, 1, 0), fill)
    assert torch.equal(flip, x.flip(-1))  # shift (1, 1) with padding 1 is the identity crop
    shifted = apply(x, torch.tensor([False]), one(0, 2), one(0, 0),
                    AugmentConfig(False, 1, 0), fill)
    assert torch.equal(shifted[0, 0, 1:, :3], x[0, 0, :3, 1:])
    assert (shifted[0, 0, 0] == -1).all() and (shifted[0, 0, :, 3] == -1).all()
    cut = apply(x, torch.tensor([False]), one(0, 0), one(1, 2), AugmentConfig(False, 0, 2), fill)
    assert (cut[0, 0, 1:3, 2:4] == -1).all() and (cut == -1).sum() == 4
    d1 = draw_epoch(torch.Generator().manual_seed(5), 10, (4, 4), AugmentConfig())
    d2 = draw_epoch(torch.Generator().manual_seed(5), 10, (4, 4), AugmentConfig())
    assert torch.equal(d1.perm, d2.perm) and torch.equal(d1.cut, d2.cut)


def test_zoo_load_contract(tmp_path):
    config = tiny_config(members=3, shard_size=2)
    summary = train_zoo(tmp_path, config, tiny_data())
    zoo = load(tmp_path)
    assert zoo.variants == ["standard", "w_asym"] and zoo.identity == config.identity
    assert zoo.dataset == {"name": "synthetic"}
    assert summary["w_asym"]["members"] == 3
    for variant in zoo.variants:
        members = zoo.members(variant)
        assert [m["id"] for m in members] == ["m00000", "m00001", "m00002"]
        for m in members:
            assert set(m["hparams"]) == {"lr", "weight_decay", "label_smoothing", "epochs"}
            assert set(m["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
            assert m["diverged"] is None and isinstance(m["init_seed"], int)
        model = asymspec.build(zoo.spec(variant))
        sd = model.state_dict()
        state = zoo.state(variant)
        assert list(state) == list(sd)
        assert all(state[k].shape == (3, *sd[k].shape) for k in sd)
        theta0 = zoo.initial_state(variant)
        assert zoo.verify_initial(variant)
        rebuilt = asymspec.build(zoo.spec(variant), init_seed=members[1]["init_seed"])
        assert all(torch.equal(theta0[k][1], v) for k, v in rebuilt.state_dict().items())
        masks = zoo.trainable_mask(variant)
        flat, ids = zoo.flat(variant)
        assert flat.shape == (3, sum(int(masks[k].sum()) for k in masks)) and len(ids) == 3
        full, _ = zoo.flat(variant, trainable_only=False)
        assert full.shape[1] == sum(p.numel() for p in model.parameters())
        # a trained member evaluates to the recorded test accuracy
        model.load_state_dict({k: v[2] for k, v in state.items()})
        data = tiny_data()
        with torch.no_grad():
            acc = (model(data.test_x).argmax(1) == data.test_y).double().mean()
        assert float(acc) == pytest.approx(members[2]["metrics"]["test_acc"])
    wmask = zoo.trainable_mask("w_asym")
    assert not all(bool(m.all()) for m in wmask.values())
    assert zoo.flat("w_asym")[0].shape[1] < zoo.flat("w_asym", trainable_only=False)[0].shape[1]
    with pytest.raises(UserError, match="no variant"):
        zoo.state("nope")


def test_diverged_member_excluded(tmp_path):
    config = tiny_config(members=3, shard_size=3, variants=("standard",),
                         hparams={**TINY_HPARAMS,
                                  "lr": {"dist": "choice", "values": [0.01, 1e30]}})
    zoo_lrs = [m.hparams["lr"] for m in plan_members(3, range(3), config.hparams)]
    assert 1e30 in zoo_lrs and 0.01 in zoo_lrs
    summary = train_zoo(tmp_path, config, tiny_data())
    zoo = load(tmp_path)
    members = zoo.members("standard")
    bad = [m["id"] for m in members if m["hparams"]["lr"] == 1e30]
    assert all(m["diverged"] is not None for m in members if m["id"] in bad)
    assert summary["standard"]["diverged"] == len(bad)
    flat, ids = zoo.flat("standard")
    assert set(ids) == {m["id"] for m in members} - set(bad)
    assert zoo.state("standard", include_diverged=True)["fc.weight"].shape[0] == 3


def test_zoo_refuses_a_different_config(tmp_path):
    train_zoo(tmp_path, tiny_config(members=1, shard_size=1), tiny_data())
    with pytest.raises(UserError, match="different zoo"):
        train_zoo(tmp_path, tiny_config(members=2, shard_size=1), tiny_data())


def test_pairwise_distance_known_values():
    from asymspec.zoo.distance import pairwise_distance, sample_pairs

    flat = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    pairs = sample_pairs(3, 10, seed=0)
    assert pairs == [(0, 1), (0, 2), (1, 2)]
    d = pairwise_distance(flat, pairs)
    l2 = (5.0 + 2.0 + 29 ** 0.5) / 3
    assert d["l2_per_param"] == pytest.approx(l2 / 4) and d["rms"] == pytest.approx(l2 / 2)
    assert d["mean_abs"] == pytest.approx((7 / 4 + 2 / 4 + 9 / 4) / 3)
    sampled = sample_pairs(100, 50, seed=1)
    assert len(set(sampled)) == 50 and all(i < j for i, j in sampled)
    assert sampled == sample_pairs(100, 50, seed=1)
