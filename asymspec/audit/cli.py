"""``asymspec audit`` and ``asymspec perm-spec``: the audit on the command line.

TARGET is ``package.module:attr`` or ``path/to/file.py:attr`` (a module class or a factory, called
with no arguments, or built from ``--config k=v,...`` / ``--config-json file``: a transformers
class such as ``transformers:GPT2LMHeadModel`` from its config with random weights, anything else
called with the settings as keyword arguments), an ``nn.Module`` instance attribute, or a
checkpoint written by ``asymspec compile`` (``.pt``; the model is rebuilt from ``--spec`` or the
spec stored in the checkpoint, its state_dict loaded, and the *module* audited by tracing).

``--meta`` builds TARGET with its parameters on the meta device (no parameter memory; a
Llama-3-8B-shaped config audits in seconds) and runs the numeric check on a width-reduced twin
(:mod:`asymspec.audit.meta`).

Exit codes (as ``check``): 0 asymmetric; 1 symmetric, or unknown (unsupported ops, listed by name
and location); 2 invalid input; 3 a reported symmetry failed the numerical check or could not be
applied (e.g. conflicting permutations of a tied tensor), or the audit itself failed (a bug).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from asymspec.atomic import atomic_write_bytes
from asymspec.cli import _threads, main, set_option
from asymspec.errors import UserError
from asymspec.targets import instantiate


def _parse_shape(text: str) -> tuple[tuple[int, ...], str, int]:
    """``1,3,224,224`` (float) or ``2,16:long`` / ``2,16:long7`` (integers in [0, 7))."""
    shape, _, dtype = text.partition(":")
    try:
        dims = tuple(int(s) for s in shape.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise UserError(f"--input-shape '{text}': expected comma-separated integers such as "
                        "1,3,224,224 (optionally ':long' or ':long<N>' for integer inputs "
                        "in [0, N))") from None
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"--input-shape '{text}': every dimension must be a positive integer")
    kind = dtype.rstrip("0123456789")
    high = dtype[len(kind):]
    if kind not in ("", "float", "long", "int") or (high and kind in ("", "float")):
        raise UserError(f"--input-shape '{text}': dtype must be float, long or long<N>")
    return dims, "float" if kind in ("", "float") else "long", int(high or 2)


def _inputs(shapes: tuple[str, ...], seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for text in shapes:
        dims, dtype, high = _parse_shape(text)
        if dtype == "float":
            out.append(torch.randn(dims, generator=g))
        else:
            out.append(torch.randint(0, high, dims, generator=g))
    return tuple(out)


def _load_checkpoint(target: str, spec: str | None, overrides):
    import torch
    import yaml

    from asymspec.compiler import build, example_inputs

    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)  # never runs code
    except Exception as exc:
        raise UserError(f"{target}: cannot read checkpoint: {type(exc).__name__}: {exc}") \
            from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise UserError(f"{target}: not an asymspec checkpoint (no 'state_dict')")
    if spec is None:
        if "spec" not in payload:
            raise UserError(f"{target}: the checkpoint stores no spec; pass --spec")
        spec_src = yaml.safe_load(payload["spec"])
    else:
        spec_src = spec
    model = build(spec_src, overrides)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{target}: the state_dict does not match the spec: "
                        f"{str(exc).splitlines()[0]}") from None
    return model, example_inputs(model.ir, batch=4, seed=0)


def _parse_config(text: str | None, json_path: str | None) -> dict:
    """``--config k=v,k=v`` (values read as YAML scalars: 2, 0.1, true, gelu) merged over
    ``--config-json file`` (a JSON object)."""
    import yaml

    out: dict = {}
    if json_path:
        try:
            out.update(json.loads(Path(json_path).read_text()))
        except (OSError, ValueError) as exc:
            raise UserError(f"--config-json '{json_path}': cannot read a JSON object: {exc}") \
                from None
        if not isinstance(out, dict):
            raise UserError(f"--config-json '{json_path}': expected a JSON object")
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--config '{text}': expected key=value pairs such as "
                            "n_layer=2,n_embd=64")
        try:
            out[key.strip()] = yaml.safe_load(value.strip())
        except yaml.YAMLError:
            out[key.strip()] = value.strip()
    return out


def build_from_config(target: str, config: dict):
    """``target`` built from ``config``: a transformers model class (anything with a
    ``config_class``) gets ``config_class(**config)`` -- with ``use_cache=False`` unless given,
    since a key-value cache is no part of the function being audited -- and random weights; any
    other class or factory is called with ``**config``."""
    from torch import nn

    from asymspec.targets import load_attr

    obj = load_attr(target)
    if isinstance(obj, nn.Module):
        raise UserError(f"TARGET '{target}' is a module instance; --config needs a class or "
                        "factory")
    try:
        config_class = getattr(obj, "config_class", None)
        if config_class is not None:
            cfg = config_class(**dict({"use_cache": False}, **config))
            model = obj(cfg)
        else:
            model = obj(**config)
    except Exception as exc:
        raise UserError(f"TARGET '{target}': building it from --config {config} failed: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        ) from None
    if not isinstance(model, nn.Module):
        raise UserError(f"TARGET '{target}' returned {type(model).__name__}, not an nn.Module")
    return model.eval()


def _resolve(target: str, input_shapes, spec, overrides, config: dict | None = None):
    if target.endswith((".pt", ".pth")) and ":" not in target:
        if not Path(target).is_file():
            raise UserError(f"checkpoint '{target}' does not exist")
        model, inputs = _load_checkpoint(target, spec, overrides)
        if input_shapes:
            inputs = _inputs(input_shapes)
        return model, inputs
    if spec or overrides:
        raise UserError("--spec / --set are only used with a checkpoint TARGET (.pt)")
    model = build_from_config(target, config) if config else instantiate(target)
    if not input_shapes:
        raise UserError(f"TARGET '{target}': pass --input-shape (e.g. 1,3,224,224)")
    return model, _inputs(input_shapes)


def _common(f):
    f = click.option("--input-shape", "input_shapes", multiple=True, metavar="SHAPE",
                     help="Example input shape, e.g. 1,3,224,224; repeat for several inputs; "
                          "append ':long<N>' for integer inputs in [0, N) (token ids, "
                          "edge_index).")(f)
    f = click.option("--spec", type=click.Path(dir_okay=False), default=None,
                     help="Spec of a checkpoint TARGET (default: the one stored in it).")(f)
    f = click.option("--tracer", type=click.Choice(["auto", "fx", "export"]), default="auto",
                     show_default=True,
                     help="torch.fx, torch.export, or fx with an export fallback.")(f)
    f = click.option("--config", "config_text", default=None, metavar="K=V,...",
                     help="Build TARGET from these settings: a transformers class from its "
                          "config (e.g. n_layer=2,n_embd=64,n_head=4), any other class or "
                          "factory called with them as keyword arguments.")(f)
    f = click.option("--config-json", type=click.Path(dir_okay=False), default=None,
                     help="Settings as a JSON object (e.g. a transformers config.json); "
                          "--config entries override it.")(f)
    f = set_option(f)
    return click.argument("target")(f)


def _audit_meta(target: str, input_shapes, spec, overrides, config: dict,
                twin_text: str | None, name: str, tracer: str, numeric: bool):
    """``audit --meta``: TARGET built with parameters on the meta device
    (:mod:`asymspec.audit.meta`); the numeric check runs on a width-reduced twin."""
    from torch import nn

    from asymspec.audit.meta import audit_meta, config_defaults
    from asymspec.targets import load_attr

    if target.endswith((".pt", ".pth")) and ":" not in target:
        raise UserError("--meta builds TARGET from its class or factory; a checkpoint holds "
                        "weights: audit it without --meta")
    if spec or overrides:
        raise UserError("--spec / --set are only used with a checkpoint TARGET (.pt)")
    if not input_shapes:
        raise UserError(f"TARGET '{target}': pass --input-shape (e.g. 1,16:long)")
    if isinstance(load_attr(target), nn.Module):
        raise UserError(f"TARGET '{target}' is a module instance, already built with its "
                        "weights; --meta needs a class or factory to build")

    def build(cfg: dict):
        return build_from_config(target, cfg) if cfg else instantiate(target)

    def forward_ok(model, inputs) -> None:
        _forward_ok(model, inputs, f"{target} (width-reduced twin)")

    return audit_meta(build, config, _inputs(input_shapes), name=name, tracer=tracer,
                      numeric=numeric, twin_overrides=_parse_config(twin_text, None),
                      forward_check=forward_ok, defaults=config_defaults(load_attr(target)))


def _forward_ok(model, inputs, target: str) -> None:
    import torch

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as exc:
        raise UserError(f"TARGET '{target}': the model fails on the example inputs: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        ) from None
    finally:
        model.train(was)


@main.command(name="audit")
@_common
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--max-generators", type=int, default=None,
              help="Limit the generators listed in --json output.")
@click.option("--no-numeric", is_flag=True, help="Skip the numerical check of generators.")
@click.option("--meta", is_flag=True,
              help="Build TARGET with its parameters on the meta device (no parameter memory: "
                   "full-size configs) and run the numeric check on a width-reduced twin.")
@click.option("--twin-config", "twin_text", default=None, metavar="K=V,...",
              help="With --meta: settings overriding the automatic width-reduced twin.")
def audit_cmd(target: str, input_shapes, spec, tracer: str, config_text, config_json,
              overrides, as_json: bool, max_generators: int | None, no_numeric: bool,
              meta: bool, twin_text: str | None) -> None:
    """Audit TARGET (any PyTorch model) for residual parameter symmetries.

    Exit 0: asymmetric; 1: symmetric or unknown (unsupported ops are listed); 2: invalid input;
    3: a reported symmetry failed the numerical check (a bug).
    """
    from asymspec.audit import AuditError, audit

    _threads()
    config = _parse_config(config_text, config_json)
    name = target.rpartition(":")[2] or Path(target).stem
    if twin_text and not meta:
        raise UserError("--twin-config is only used with --meta")
    try:
        if meta:
            report = _audit_meta(target, input_shapes, spec, overrides, config, twin_text,
                                 name, tracer, not no_numeric)
        else:
            model, inputs = _resolve(target, input_shapes, spec, overrides, config)
            _forward_ok(model, inputs, target)
            report = audit(model, inputs, name=name, numeric=not no_numeric, tracer=tracer)
    except AuditError as exc:
        click.echo(f"internal error: {exc}", err=True)
        sys.exit(3)
    except UserError:
        raise
    except Exception as exc:  # a crash is an audit bug, reported as such, never a traceback
        click.echo(f"internal error: the audit failed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(3)
    if as_json:
        out = report.to_json(max_generators)
        out["target"] = target
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(report.format_text())
    sys.exit(0 if report.verdict == "asymmetric" else 1)


@main.command(name="perm-spec")
@_common
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON here (default: stdout).")
def perm_spec_cmd(target: str, input_shapes, spec, tracer: str, config_text, config_json,
                  overrides, output: str | None) -> None:
    """Derive TARGET's permutation spec: which parameter axes permute together (JSON)."""
    from asymspec.audit import permutation_spec

    _threads()
    model, inputs = _resolve(target, input_shapes, spec, overrides,
                             _parse_config(config_text, config_json))
    _forward_ok(model, inputs, target)
    out = permutation_spec(model, inputs, name=target.rpartition(":")[2] or Path(target).stem,
                           tracer=tracer)
    out["target"] = target
    text = json.dumps(out, indent=1)
    if output:
        atomic_write_bytes(output, text.encode("utf-8"))
        free = sum(g["kind"] != "fixed" for g in out["groups"])
        click.echo(f"wrote {output}: {free} permutation groups, {len(out['axes'])} tensors"
                   + (f", {len(out['unsupported'])} unsupported ops" if out["unsupported"]
                      else ""))
    else:
        click.echo(text)
