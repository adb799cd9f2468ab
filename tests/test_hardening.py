"""Issue 11: no code runs from checkpoints, `check` claims nothing false, huge sizes fail early
and located, clean errors for the small things, `asymspec.load`, lazy startup."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import asymspec
from asymspec.cli import LAZY_COMMANDS, LAZY_HELP, main
from asymspec.errors import SpecError, UserError
from tests.conftest import SPECS

ROOT = Path(__file__).resolve().parents[1]
TINY_MLP = """\
name: tiny
model:
  family: mlp
  input_dim: 6
  widths: [5, 4]
  output_dim: 3
asymmetry:
  sigma_asym: {f_std: 1.0}
"""


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _no_traceback(res) -> None:
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception


# -- 1. checkpoints are loaded with weights_only=True -------------------------------------------

class _Evil:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(tmp_path: Path, marker: Path) -> Path:
    model = asymspec.build(str(SPECS / "mlp_mnist.yaml"))
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "spec": (SPECS / "mlp_mnist.yaml").read_text(),
                "payload": _Evil(marker)}, path)
    return path


def test_malicious_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path, marker)
    # control: the file really is live (an unsafe load runs it)
    control = tmp_path / "control"
    torch.save({"x": _Evil(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()

    for args in (["canonicalize", evil, "-o", tmp_path / "c.pt"],
                 ["align", evil, evil, "-o", tmp_path / "a.pt"],
                 ["audit", evil]):
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert str(evil) in res.output
        _no_traceback(res)
        assert not marker.exists(), args
    with pytest.raises(UserError, match="weights_only"):
        asymspec.load(evil)
    assert not marker.exists()


def test_compiled_checkpoint_loads_safely_and_rebuilds(tmp_path):
    out = tmp_path / "m.pt"
    res = cli("compile", SPECS / "mlp_mnist_wasym.yaml", "-o", out, "--seed", "5")
    assert res.exit_code == 0, res.output
    payload = torch.load(out, weights_only=True)  # what asymspec writes needs no allow-list
    model = asymspec.load(out)
    state = model.state_dict()
    assert state.keys() == payload["state_dict"].keys()
    assert all(torch.equal(state[k], payload["state_dict"][k]) for k in state)
    x = torch.randn(2, 784, generator=torch.Generator().manual_seed(0))
    ref = asymspec.build(payload["spec"], init_seed=5)  # build accepts spec text
    assert torch.equal(model(x), ref(x))


def test_build_accepts_spec_text_and_reports_it():
    model = asymspec.build(TINY_MLP)
    assert model(torch.randn(2, 6)).shape == (2, 3)
    assert asymspec.compile_ir("{name: t, model: {family: mlp, input_dim: 3, widths: [2], "
                               "output_dim: 2}}").name == "t"
    with pytest.raises(SpecError, match="<spec text>:"):
        asymspec.build(TINY_MLP.replace("widths: [5, 4]", "widths: [5, -4]"))


def test_load_rejects_mismatched_state(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"fc1.weight": torch.zeros(2, 2)}, "spec": TINY_MLP}, bad)
    with pytest.raises(UserError, match="does not fit"):
        asymspec.load(bad)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="not an asymspec checkpoint"):
        asymspec.load(tmp_path / "list.pt")


# -- 2. check never claims what is false ---------------------------------------------------------

@pytest.mark.parametrize("override, fragment", [
    ("asymmetry.sigma_asym.f_std=0.0", "zero entr"),
    ("asymmetry.sigma_asym.f_std=1.0e-60", "zero entr"),
    ("asymmetry.sigma_asym.f_std=1.0e+300", "overflows float32"),
    ("asymmetry.w_asym={nfix: 1, kappa: 1.0e+308}", "overflows float32"),
    ("asymmetry.syre={kappa: 1.0e+100}", "overflows float32"),
    ("asymmetry.fixed_bias={k: 1.0e+200}", "overflows float32"),
])
def test_degenerate_or_overflowing_fixed_values_are_located_errors(tmp_path, override, fragment):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY_MLP)
    res = cli("check", spec, "--set", override)
    assert res.exit_code == 2, res.output
    assert fragment in res.output and "<override #1>:1:" in res.output
    _no_traceback(res)


def test_infinite_scale_in_file_is_located(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY_MLP.replace("f_std: 1.0", "f_std: .inf"))
    with pytest.raises(SpecError) as err:
        asymspec.compile_ir(spec)
    assert err.value.line == 8 and "finite" in str(err.value)


def test_integer_beyond_float_range_is_located(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY_MLP + "  syre: {kappa: 1" + "0" * 400 + "}\n")
    res = cli("check", spec)
    assert res.exit_code == 2 and f"{spec}:9:" in res.output, res.output
    assert "beyond the range of a float" in res.output


def test_figlu_claim_only_when_hypotheses_hold():
    """F as drawn satisfies the certificate used in place of Prop. 2's 'distinct entries'."""
    from asymspec.passes.sigma_asym import _require_distinct_nonzero

    def error(path, message):
        return SpecError(message, field_path=path)

    _require_distinct_nonzero(torch.randn(64, 64), "a", 1.0, ("f_std",), error)
    F = torch.randn(4, 4)
    F[1] = F[0][torch.tensor([3, 2, 1, 0])]  # two rows with the same values: P2 F P1 = F possible
    with pytest.raises(SpecError, match="two rows"):
        _require_distinct_nonzero(F, "a", 1.0, ("f_std",), error)
    report = asymspec.check(asymspec.build(TINY_MLP))
    assert report.verdict == "asymmetric"


# -- 3. huge sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["check", "show", "compile"])
def test_huge_width_fails_located_naming_the_limit(tmp_path, cmd):
    extra = ["-o", tmp_path / "m.pt"] if cmd == "compile" else []
    res = cli(cmd, SPECS / "mlp_mnist.yaml", "--set", "model.widths=[1000000000000]", *extra)
    assert res.exit_code == 2, res.output
    assert "ASYMSPEC_MAX_DIM" in res.output and "model.widths[0]" in res.output
    _no_traceback(res)


def test_total_size_limit_is_configurable(monkeypatch):
    res = cli("show", SPECS / "mlp_mnist.yaml", "--set", "model.widths=[100000, 100000]")
    assert res.exit_code == 2 and "ASYMSPEC_MAX_PARAMS" in res.output, res.output
    monkeypatch.setenv("ASYMSPEC_MAX_PARAMS", "1000")
    res = cli("show", SPECS / "mlp_mnist.yaml")
    assert res.exit_code == 2 and "over the limit of 1,000 parameter entries" in res.output
    monkeypatch.setenv("ASYMSPEC_MAX_DEPTH", "10")
    res = cli("check", SPECS / "resnet20.yaml")
    assert res.exit_code == 2 and "ASYMSPEC_MAX_DEPTH" in res.output, res.output


def test_check_crash_is_exit_3_not_1(monkeypatch, tmp_path):
    import asymspec.check as check_mod

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(check_mod, "check_ir", boom)
    res = cli("check", SPECS / "mlp_mnist.yaml")
    assert res.exit_code == 3 and "internal error" in res.output

    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(check_mod, "check_ir", oom)
    res = cli("check", SPECS / "mlp_mnist.yaml")
    assert res.exit_code == 2 and "out of memory" in res.output


@pytest.mark.parametrize("name", ["mlp_mnist_wasym", "resnet20_sigma", "gnn_wasym",
                                  "transformer_small_wasym"])
def test_show_counts_from_ir_match_the_module(name):
    from asymspec.nn.model import emit
    from asymspec.paramtable import ir_parameter_table, parameter_table

    ir = asymspec.compile_ir(SPECS / f"{name}.yaml")
    assert ir_parameter_table(ir) == parameter_table(emit(ir))


def test_ir_counts_match_for_syre_fixed_bias_and_sharing():
    from asymspec.nn.model import emit
    from asymspec.paramtable import ir_parameter_table, parameter_table

    for asym in ({"syre": {"kappa": 0.1}, "fixed_bias": {"k": 0.5}},
                 {"w_asym": {"nfix": 2}, "sigma_asym": {"f_std": 1.0}}):
        spec = {"name": "t", "model": {"family": "mlp", "input_dim": 6, "widths": [5, 4],
                                       "output_dim": 3, "norm": "batchnorm"},
                "asymmetry": asym}
        ir = asymspec.compile_ir(spec)
        assert ir_parameter_table(ir) == parameter_table(emit(ir))


# -- 7. the smaller ones ---------------------------------------------------------------------

def test_compile_to_impossible_path_is_exit_2(tmp_path):
    for out in (tmp_path / "no" / "such" / "dir" / "m.pt", tmp_path):
        res = cli("compile", SPECS / "mlp_mnist.yaml", "-o", out)
        assert res.exit_code == 2, res.output
        assert "cannot write" in res.output or "is a directory" in res.output, res.output
        _no_traceback(res)


def test_globs_matching_nothing_are_located_warnings(tmp_path):
    from asymspec.cli import _format_warning
    from asymspec.errors import SpecWarning

    spec = tmp_path / "s.yaml"
    spec.write_text(TINY_MLP.replace("{f_std: 1.0}", "{f_std: 1.0, layers: [act*, actx*]}"))
    with pytest.warns(SpecWarning, match=r"s.yaml:8:.*'actx\*' matches no layer") as rec:
        res = cli("check", spec)
    assert res.exit_code == 0, res.output
    assert _format_warning(rec[0].message, SpecWarning, "x.py", 1).startswith(f"warning: {spec}:8:")
    with pytest.warns(SpecWarning, match=r"<override #1>.*'fc9' matches no layer"):
        res = cli("check", SPECS / "mlp_mnist_wasym.yaml", "--set",
                  "asymmetry.w_asym.overrides={fc9: {nfix: 2}}")
    assert res.exit_code == 0, res.output


def test_align_with_nan_weights_is_exit_2(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert cli("compile", SPECS / "mlp_mnist.yaml", "-o", a).exit_code == 0
    payload = torch.load(a, weights_only=True)
    payload["state_dict"]["fc2.weight"][0, 0] = float("nan")
    torch.save(payload, b)
    res = cli("align", a, b, "-o", tmp_path / "out.pt")
    assert res.exit_code == 2 and "fc2.weight" in res.output and "NaN" in res.output, res.output
    _no_traceback(res)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_spec_message(tmp_path, encoding):
    spec = tmp_path / "s.yaml"
    spec.write_bytes(TINY_MLP.encode(encoding))
    res = cli("check", spec)
    assert res.exit_code == 2 and "save it as UTF-8" in res.output, res.output
    assert "UTF-16" in res.output or "UTF-32" in res.output


def test_outputs_keep_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "m.pt"
        assert cli("compile", SPECS / "mlp_mnist.yaml", "-o", out).exit_code == 0
        assert (out.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        out2 = tmp_path / "m2.pt"
        assert cli("compile", SPECS / "mlp_mnist.yaml", "-o", out2).exit_code == 0
        assert (out2.stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)


def test_lazy_help_matches_the_commands():
    for name, module in LAZY_COMMANDS.items():
        importlib.import_module(module)
        cmd = main.commands[name]
        assert cmd.get_short_help_str(500) == \
            click.Command(name, help=LAZY_HELP[name]).get_short_help_str(500)


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom asymspec.cli import main\n"
            "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "assert 'audit' in r.output and 'Audit TARGET' in r.output\n"
            "heavy = [m for m in ('torch', 'networkx', 'igraph', 'numpy', 'torch_geometric') "
            "if m in sys.modules]\nprint(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


@pytest.mark.slow
def test_audit_help_prints_no_future_warning():
    res = subprocess.run([sys.executable, "-m", "asymspec", "audit", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0 and "FutureWarning" not in res.stderr, res.stderr


def test_import_asymspec_is_lazy_but_complete():
    out = subprocess.run([sys.executable, "-c", "import sys, asymspec; print('torch' in "
                          "sys.modules, 'networkx' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False"], out
    assert callable(asymspec.check) and asymspec.check.check_ir
    import asymspec.check as check_module

    assert check_module is asymspec.check
    assert asymspec.build and asymspec.load and asymspec.nn and asymspec.Spec
    assert set(asymspec.__all__) <= set(dir(asymspec))
