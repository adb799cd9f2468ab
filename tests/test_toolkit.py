"""The runner toolkit (asymspec.run): LR schedules from torch.optim, the trainer (history,
evaluation points, callbacks, divergence, loss hook), the evaluator (chunked == unchunked,
bounded peak memory in a subprocess), settings-schema fragments, runners found through an entry
point, the dataset registry, resources and upstream runs (identity in the downstream hash)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from asymspec.cli import main
from asymspec.errors import SpecError, UserError
from asymspec.run import Runner, Unit, load_experiment, register, run_experiment
from asymspec.run.evaluator import evaluate, evaluate_states, interpolate_state, plan_evaluation
from asymspec.run.memory import parse_bytes, plan_chunks
from asymspec.run.schema import merge_fragment
from asymspec.run.spec import Experiment
from asymspec.run.tasks import ArrayTask, eval_batches
from asymspec.run.trainer import (
    TrainOptions,
    make_optimizer,
    make_scheduler,
    recipe_with_defaults,
    train,
)
from asymspec.spec.schema import load_schema

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


# -- schedules ---------------------------------------------------------------------------------


def _closed_form(step, total, warmup, start, peak, schedule):
    """The hand-written schedule LMC used before the toolkit (the reference)."""
    if warmup and step < warmup:
        return start + (peak - start) * step / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    frac = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * frac))
    return peak * (1 - frac)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup_epochs, start", [(0, 0.0), (2, 1e-4), (1.5, 0.0)])
def test_schedules_match_closed_form(schedule, warmup_epochs, start):
    recipe = recipe_with_defaults(lr=0.01, epochs=6, schedule=schedule,
                                  warmup_epochs=warmup_epochs, warmup_start_lr=start)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([p], recipe)
    steps_per_epoch = 7
    sched = make_scheduler(opt, recipe, steps_per_epoch)
    total, warm = 6 * steps_per_epoch, round(warmup_epochs * steps_per_epoch)
    for step in range(total):
        want = _closed_form(step, total, warm, start, 0.01, schedule)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-6, abs=1e-9), step
        opt.step()
        sched.step()


# -- trainer -----------------------------------------------------------------------------------


def _blobs(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    x = centres[y] + 0.6 * torch.randn(n, 2, generator=g)
    return ArrayTask(x[: n // 2 * 1], y[: n // 2 * 1], x[n // 2:], y[n // 2:], 3)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_trainer_history_eval_points_and_determinism():
    task = _blobs()
    recipe = recipe_with_defaults(lr=0.05, epochs=6, batch_size=16, schedule="cosine")
    a, b = _mlp(), _mlp()
    ha = train(a, task, recipe, TrainOptions(data_seed=3, eval_every=2))
    hb = train(b, task, recipe, TrainOptions(data_seed=3, eval_every=2))
    assert ha.train_loss == hb.train_loss and len(ha.train_loss) == 6
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert [e["epoch"] for e in ha.evals] == [0, 2, 4, 6]
    assert ha.evals[-1]["train_acc"] > 0.9 > ha.evals[0]["train_acc"]
    assert ha.epochs_to("train_acc", 0.9) in (2, 4, 6) and ha.epochs_to("train_acc", 2.0) is None
    assert ha.steps == 6 * math.ceil(120 / 16) and ha.lr[-1] == pytest.approx(0.0, abs=1e-12)
    assert ha.to_dict()["diverged"] is None
    c = _mlp()
    hc = train(c, task, recipe, TrainOptions(data_seed=4))
    assert hc.train_loss != ha.train_loss  # another data order


def test_trainer_callbacks_loss_hook_and_divergence():
    task = _blobs()
    recipe = recipe_with_defaults(lr=0.05, epochs=20, batch_size=32)
    calls = []

    def loss_fn(out, target, ctx):
        calls.append(ctx["step"])
        return torch.nn.functional.cross_entropy(out, target)

    hist = train(_mlp(), task, recipe, TrainOptions(
        loss_fn=loss_fn, eval_every=1,
        on_epoch=[lambda info: info.history.evals[-1]["train_acc"] >= 0.9]))
    assert hist.stopped_early and hist.epochs < 20 and len(hist.train_loss) == hist.epochs
    assert calls == list(range(hist.steps))
    boom = recipe_with_defaults(lr=1e6, epochs=5, batch_size=32, optimizer="sgd")
    with pytest.raises(UserError, match="diverged"):
        train(_mlp(), task, boom, TrainOptions(loss_fn=lambda o, t, c: o.sum() * 1e38 ** 2))
    hist = train(_mlp(), task, boom,
                 TrainOptions(on_nonfinite="stop", loss_fn=lambda o, t, c: o.sum() * 1e38 ** 2))
    assert hist.diverged == {"epoch": 1, "step": 1} and not hist.stopped_early


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_optimizer_impl_fused_and_foreach_follow_the_default_up_to_rounding(optimizer):
    task = _blobs()
    runs = {}
    for impl in (None, "default", "fused", "foreach"):
        recipe = recipe_with_defaults(lr=0.05, epochs=3, batch_size=16, optimizer=optimizer,
                                      weight_decay=0.01)
        if impl is not None:
            recipe["optimizer_impl"] = impl
        model = _mlp()
        opt = make_optimizer(list(model.parameters()), recipe)
        assert bool(opt.defaults.get("fused")) == (impl == "fused")
        assert bool(opt.defaults.get("foreach")) == (impl == "foreach")
        train(model, task, recipe, TrainOptions(data_seed=1))
        runs[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(runs[None], runs["default"])
    for impl in ("fused", "foreach"):
        torch.testing.assert_close(runs[impl], runs[None], rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="optimizer_impl"):
        make_optimizer(list(_mlp().parameters()), recipe_with_defaults(optimizer_impl="fast"))


def test_optimizer_impl_is_hashed_only_when_set(tmp_path):
    plain = load_experiment(str(ROOT / "specs" / "lmc_digits.yaml"))
    assert "optimizer_impl" not in (plain.data.get("train") or {})  # no schema default
    fused = load_experiment(str(ROOT / "specs" / "lmc_digits.yaml"),
                            overrides=["train.optimizer_impl=fused"])
    assert fused.content_hash() != plain.content_hash()
    default = load_experiment(str(ROOT / "specs" / "lmc_digits.yaml"),
                              overrides=["train.optimizer_impl=default"])
    assert default.content_hash() == plain.content_hash()  # the same optimizer, the same run
    res = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "lmc_digits.yaml"),
                                    "--set", "train.optimizer_impl=fast",
                                    "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "optimizer_impl" in res.output and "Traceback" not in res.output


# -- evaluator ---------------------------------------------------------------------------------


def test_evaluate_matches_torch_and_returns_logits():
    task = _blobs()
    model = _mlp()
    batches = eval_batches(task, "test", 50)
    res = evaluate(model, batches, label_smoothing=0.1, return_logits=True, return_losses=True)
    with torch.no_grad():
        logits = model(task.test_x)
    ref = torch.nn.functional.cross_entropy(logits, task.test_y, label_smoothing=0.1)
    assert res.loss == pytest.approx(float(ref), rel=1e-5) and res.count == 120
    assert torch.allclose(res.logits, logits, atol=1e-6) and res.losses.shape == (120,)
    assert res.accuracy == pytest.approx(float((logits.argmax(1) == task.test_y).float().mean()))


def test_evaluate_states_chunked_equals_unchunked():
    import asymspec

    spec = ROOT / "specs" / "resnet20.yaml"
    over = ["model.depth=8", "model.in_channels=1", "model.input_size=12"]
    a, b = asymspec.build(spec, over, init_seed=1), asymspec.build(spec, over, init_seed=2)
    states = [interpolate_state(a.state_dict(), b.state_dict(), t) for t in (0, .25, .5, .75, 1)]
    x, y = torch.randn(40, 1, 12, 12), torch.randint(0, 10, (40,))
    batches = [((x[:25],), y[:25], None), ((x[25:],), y[25:], None)]
    big = plan_evaluation(a, states, batches, budget_bytes=1 << 32)
    assert big.states_per_chunk == 5 and big.examples_per_chunk == 25
    small = plan_evaluation(a, states, batches, budget_bytes=int(big.bytes_per_state
                                                                 + 12 * big.bytes_per_example))
    assert small.states_per_chunk == 1 and small.examples_per_chunk < 25
    mid = plan_evaluation(a, states, batches, budget_bytes=int(3 * big.bytes_per_state + 3 * 25 * 2
                                                               * big.bytes_per_example) + 10)
    assert 1 < mid.states_per_chunk < 5
    ref = evaluate_states(a, states, batches, use_vmap=False, plan=big, label_smoothing=0.05)
    for plan in (big, small, mid):
        got = evaluate_states(a, states, batches, use_vmap=True, plan=plan,
                              label_smoothing=0.05)
        assert got[0] == pytest.approx(ref[0], rel=1e-5) and got[1] == ref[1]
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(b(x), y, label_smoothing=0.05)
    assert ref[0][-1] == pytest.approx(float(want), rel=1e-5)


def test_plan_chunks_and_byte_parsing():
    assert plan_chunks(25, 100, 1000.0, 10_000, 10**9) == (25, 100)
    s, e = plan_chunks(25, 100, 1000.0, 10_000, 3 * (10_000 + 100 * 2000) + 5)
    assert s == 3 and e == 100
    s, e = plan_chunks(25, 100, 1000.0, 10_000, 10_000 + 10 * 2000)
    assert (s, e) == (1, 10)
    assert plan_chunks(4, 8, 1e12, 10, 100) == (1, 1)  # never below one state, one example
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("1.5GB") == int(1.5 * (1 << 30))
    assert parse_bytes("1000") == 1000


MEMORY_SCRIPT = """
import resource, sys, torch, asymspec
from asymspec.run.evaluator import evaluate_states, interpolate_state, plan_evaluation
torch.set_num_threads(1)
spec = sys.argv[1]
over = ["model.depth=8", "model.in_channels=1", "model.input_size=8"]
a, b = asymspec.build(spec, over, init_seed=1), asymspec.build(spec, over, init_seed=2)
states = [interpolate_state(a.state_dict(), b.state_dict(), i / 24) for i in range(25)]
x, y = torch.randn(512, 1, 8, 8), torch.randint(0, 10, (512,))
batches = [((x,), y, None)]
budget = 160 << 20
plan = plan_evaluation(a, states, batches, budget_bytes=budget)
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
try:  # reset the peak-RSS mark to the current RSS: earlier phases (imports) do not count
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
before = rss()
evaluate_states(a, states, batches, use_vmap=True, plan=plan)
peak = hwm()
print(peak - before, budget, plan.states_per_chunk, plan.examples_per_chunk,
      int(plan.bytes_per_example * 512 * 25))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs /proc (Linux)")
def test_evaluating_many_states_stays_within_memory_budget(tmp_path):
    """25 states of a ResNet8 on 512 images: unbounded vmap would hold ~25x512 examples'
    activations; the budget (160 MiB) must bound the growth of the peak RSS (stated bound:
    budget + 64 MiB for allocator slack and the one-state probe)."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), str(ROOT / "specs" / "resnet20.yaml")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    growth, budget, states, examples, unbounded = map(int, out.stdout.split())
    assert unbounded > 4 * budget  # the unchunked job really would not fit
    assert states < 25 or examples < 512
    assert growth < budget + (64 << 20), (growth, budget)


# -- settings schema fragments, entry points -------------------------------------------------


def test_merge_fragment_rules():
    core = load_schema("experiment")
    merged = merge_fragment(core, {"properties": {"k": {"type": "integer", "default": 1}},
                                   "required": ["k"],
                                   "variant_properties": {"paper": {"type": "number"}}}, "t")
    assert "k" in merged["properties"] and merged["required"] == ["name", "k"]
    assert "paper" in merged["$defs"]["variant"]["properties"]
    assert "k" not in core["properties"]  # the cached core schema is untouched
    with pytest.raises(TypeError, match="cannot redefine"):
        merge_fragment(core, {"properties": {"name": {}}}, "t")
    with pytest.raises(TypeError, match="may only have the keys"):
        merge_fragment(core, {"propertys": {}}, "t")


TOY_RUNNER = '''
from asymspec.run import Runner, Unit

class ToyRunner(Runner):
    settings_schema = {"properties": {"repeats": {"type": "integer", "minimum": 1,
                                                  "default": 2}}}

    def stages(self):
        return [[Unit("items", f"i{k}", k) for k in range(self.experiment.data["repeats"])]]

    def run_unit(self, unit, out_dir):
        return {"square": unit.seed ** 2}

    def finalize(self):
        return {"squares": [self.load_unit_metrics(u)["metrics"]["square"]
                            for u in self.stages()[0]]}
'''


@pytest.fixture
def toy_entry_point(tmp_path, monkeypatch):
    """A package 'toy_pkg' whose dist-info registers kind 'toy_ep' in asymspec.runners."""
    site = tmp_path / "site"
    (site / "toy_pkg").mkdir(parents=True)
    (site / "toy_pkg" / "__init__.py").write_text(TOY_RUNNER)
    info = site / "toy_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy_pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[asymspec.runners]\ntoy_ep = toy_pkg:ToyRunner\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    from asymspec.run import registry

    registry._registered.pop("toy_ep", None)


def test_toy_runner_through_entry_point(tmp_path, toy_entry_point):
    from asymspec.run import available

    assert available()["toy_ep"] == "toy_pkg:ToyRunner"
    spec = tmp_path / "toy.yaml"
    spec.write_text("name: toy\nkind: toy_ep\nrepeats: 3\n")
    run_dir = run_experiment(str(spec), quiet=True, runs_dir=tmp_path / "runs")
    assert json.loads((run_dir / "results.json").read_text()) == {"squares": [0, 1, 4]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: toy\nkind: toy_ep\nrepeats: 0\n")
    res = CliRunner().invoke(main, ["run", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and f"{bad}:3:10" in res.output and "repeats" in res.output
    assert "Traceback" not in res.output
    bad.write_text("name: toy\nkind: toy_ep\nrepeat: 2\n")
    res = CliRunner().invoke(main, ["run", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and f"{bad}:3:1" in res.output and "repeats" in res.output
    bad.write_text("name: toy\nkind: no_such_kind\n")
    res = CliRunner().invoke(main, ["run", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and f"{bad}:2:7" in res.output and "no_such_kind" in res.output


# -- dataset registry, resources, unit lookup ------------------------------------------------


def test_dataset_registry_extension_and_located_errors(tmp_path):
    from asymspec.data import ArrayDataset, register_dataset
    from asymspec.run.tasks import load_task

    @register_dataset("toy-blobs", kind="array", replace=True, options_schema={
        "type": "object", "additionalProperties": False,
        "properties": {"n": {"type": "integer", "minimum": 4}}})
    def _blobs_loader(split, root, n=40):
        t = _blobs(2 * n)
        x, y = (t.train_x, t.train_y) if split == "train" else (t.test_x, t.test_y)
        return ArrayDataset(x, y, "toy-blobs", 3)

    task = load_task({"name": "toy-blobs", "root": None, "train_subset": 10,
                      "test_subset": None, "options": {"n": 30}})
    assert task.train_x.shape == (10, 2) and len(task.test_y) == 30
    spec = tmp_path / "e.yaml"
    base = "name: e\nkind: lmc\nvariants: {s: {model: mlp_mnist.yaml}}\n"
    spec.write_text(base + "dataset: {name: toy-blobs, options: {n: 2}}\n")
    with pytest.raises(SpecError, match=r"e.yaml:4:.*dataset.options.n"):
        load_experiment(spec)
    spec.write_text(base + "dataset: {name: nope}\n")
    with pytest.raises(SpecError, match="unknown dataset 'nope'.*toy-blobs"):
        load_experiment(spec)
    spec.write_text(base + "dataset: {name: digits, options: {k: 2}}\n")
    with pytest.raises(SpecError, match="takes no options"):
        load_experiment(spec)


def test_resources_do_not_change_the_hash_and_units_by_id(tmp_path):
    spec = tmp_path / "e.yaml"
    spec.write_text("name: e\nkind: lmc\ndataset: {name: digits}\n"
                    "variants: {s: {model: mlp_mnist.yaml}}\n")
    plain = load_experiment(spec)
    rich = load_experiment(spec, None, ["resources={threads: 2, gpus: 0.25, memory_gb: 1.5}"])
    assert plain.content_hash() == rich.content_hash()
    from asymspec.run.registry import get_runner

    runner = get_runner("lmc")(rich, None)
    res = runner.unit_resources()
    assert (res.threads, res.gpus, res.memory_gb) == (2, 0.25, 1.5)
    assert runner.memory_budget() == int(1.5 * (1 << 30))
    unit = runner.unit("pairs", "s-p2")
    assert unit.info["pair"] == 2
    with pytest.raises(KeyError):
        runner.unit("pairs", "s-p99")


# -- upstream runs ---------------------------------------------------------------------------


class _Producer(Runner):
    settings_schema = {"properties": {"value": {"type": "integer", "default": 1}}}

    def stages(self):
        return [[Unit("items", "only", 0)]]

    def run_unit(self, unit, out_dir):
        return {"value": self.experiment.data["value"]}

    def finalize(self):
        return {"value": self.experiment.data["value"]}


class _Consumer(Runner):
    settings_schema = {"properties": {"scale": {"type": "integer", "default": 10}}}

    def stages(self):
        return [[Unit("items", "only", 0)]]

    def run_unit(self, unit, out_dir):
        up = json.loads((self.upstream_run("source") / "results.json").read_text())
        return {"value": up["value"] * self.experiment.data["scale"]}

    def finalize(self):
        return self.load_unit_metrics(self.unit("items", "only"))["metrics"]


def test_upstream_identity_is_part_of_the_downstream_hash(tmp_path):
    register("tk_producer", _Producer)
    register("tk_consumer", _Consumer)
    (tmp_path / "up.yaml").write_text("name: up\nkind: tk_producer\nvalue: 3\n"
                                      "profiles: {cpu: {value: 4}}\n")
    down = tmp_path / "down.yaml"
    down.write_text("name: down\nkind: tk_consumer\nupstream: {source: {spec: up.yaml}}\n")
    runs = tmp_path / "runs"
    d1 = run_experiment(str(down), quiet=True, runs_dir=runs)  # runs the upstream first
    assert json.loads((d1 / "results.json").read_text()) == {"value": 30}
    exp = Experiment.from_json(json.loads((d1 / "experiment.json").read_text()))
    ref = exp.upstreams["source"]
    assert Path(ref.run_dir).name.startswith("up-") and ref.kind == "tk_producer"
    # the upstream's profile (a different upstream experiment) -> another downstream run
    d2 = run_experiment(str(down), overrides=["upstream.source.profile=cpu"], quiet=True,
                        runs_dir=runs)
    assert d2 != d1 and json.loads((d2 / "results.json").read_text()) == {"value": 40}
    # a changed upstream spec changes the downstream hash even though down.yaml did not change
    before = load_experiment(down).content_hash()
    (tmp_path / "up.yaml").write_text("name: up\nkind: tk_producer\nvalue: 5\n")
    assert load_experiment(down).content_hash() != before
    # pinning a finished run directory gives that run's identity
    pinned = load_experiment(down, None, [f"upstream.source={{run: {ref.run_dir}}}"])
    assert pinned.upstreams["source"].identity == ref.identity
    # errors are located
    down.write_text("name: down\nkind: tk_consumer\nupstream: {source: {profile: cpu}}\n")
    with pytest.raises(SpecError, match="down.yaml:3:.*needs `spec`"):
        load_experiment(down)
    down.write_text("name: down\nkind: tk_consumer\nupstream: {source: {spec: down.yaml}}\n")
    with pytest.raises(SpecError, match="cycle"):
        load_experiment(down)


def test_example_runner_doc_spec_is_valid(tmp_path):
    """The spec in example_runner's docstring loads (the README shows it)."""
    import importlib.util

    sm = importlib.util.spec_from_file_location("example_runner",
                                                ROOT / "runners" / "example_runner.py")
    mod = importlib.util.module_from_spec(sm)
    sm.loader.exec_module(mod)
    register("init_stats", mod.InitStatsRunner)
    doc = mod.__doc__.split("A spec for it::")[1]
    spec = tmp_path / "d.yaml"
    spec.write_text(textwrap.dedent(doc))
    exp = load_experiment(spec)
    assert exp.data["models"] == 4 and exp.data["examples"] == 256
