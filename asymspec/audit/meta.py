"""Auditing full-size models without their weights: parameters on the meta device.

A neuron-level audit needs the model's *structure* -- which parameter axes a computation reads and
how -- never its parameter values: the lowering treats every parameter as a free variable (the
symmetries it reports are symmetries of the parameter space, valid for generic weights).  What it
does read by value are constants: masks and fixed values held in buffers (W-Asym), rotary tables
computed from ``inv_freq``, position ids, attention masks.  So a full-size model (a
Llama-3-8B-shaped config: 8 billion parameters, 32 GB in float32) is built with

* **parameters on the meta device** (:func:`parameters_on_meta`: ``nn.Module.register_parameter``
  moves each new parameter to ``meta`` -- shape and dtype, no storage; weight tying by assignment
  keeps tensor identity, so ties are still found), and
* **buffers materialised** on the CPU (they are computed in ``__init__`` from the config:
  ``inv_freq``, ``position_ids``, masks from a seeded generator), so every value the lowering
  inspects is real.

While lowering (:class:`MetaPlacement`), an op whose operands include a meta tensor runs on
``meta`` (shape only); an op reading only real tensors runs on the CPU, and a request to move a
real tensor to the meta device (``cos.to(x.device)``, ``torch.arange(n, device=x.device)``) is
ignored, so constants that do not depend on parameters keep their values.  A buffer that was
nevertheless computed from parameters at construction (``register_buffer("w0",
self.weight.clone())``) is on ``meta`` too and has no values: :func:`meta_buffers` finds them and
the audit refuses (a value it cannot read could be an asymmetry it would miss).

The numeric check cannot run without weights; it runs on a **width-reduced twin**
(:func:`twin_config`): the same class and layer structure with small widths (heads and key-value
heads in the same ratio, fewer layers), real float64 weights, the full audit including the
numeric check of every reported generator.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

META = torch.device("meta")
CPU = torch.device("cpu")

VALUES_NOTE = ("values not inspected: parameters are on the meta device; result assumes generic "
               "weights (buffers such as masks and rotary tables were materialised and read)")

_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within the block, every parameter a module registers is moved to the meta device.

    ``register_parameter`` is patched process-wide for the duration (as accelerate's
    ``init_empty_weights`` does); the CPU tensor a constructor creates first is never written
    (``torch.empty``), so it costs address space, not memory.  Initialisers that run after
    registration (``reset_parameters``, transformers' ``_init_weights``) run on meta: no-ops."""
    orig = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            extra = dict(getattr(param, "__dict__", {}))
            param = type(param)(param.detach().to(META), requires_grad=param.requires_grad)
            param.__dict__.update(extra)
        orig(self, name, param)

    with _PATCH_LOCK:
        nn.Module.register_parameter = register
        try:
            yield
        finally:
            nn.Module.register_parameter = orig


def meta_buffers(module: nn.Module) -> list[str]:
    """Names of buffers without values (on the meta device)."""
    return [k for k, b in module.named_buffers() if b.device.type == "meta"]


def non_meta_parameters(module: nn.Module) -> list[str]:
    """Parameters that hold storage although the model was built on meta (created without
    ``register_parameter``); the caller moves them."""
    return [k for k, p in module.named_parameters() if p.device.type != "meta"]


def parameter_count(module: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# ----------------------------------------------------------------------------- placement
def _has_meta(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.device.type == "meta"
    if isinstance(x, (list, tuple)):
        return any(_has_meta(v) for v in x)
    if isinstance(x, dict):
        return any(_has_meta(v) for v in x.values())
    return False


def _map(x: Any, fn) -> Any:
    if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
        out = [_map(v, fn) for v in x]
        return type(x)(*out) if hasattr(x, "_fields") else type(x)(out)
    if isinstance(x, dict):
        return {k: _map(v, fn) for k, v in x.items()}
    return fn(x)


def _to_meta(x: Any) -> Any:
    return x.to(META) if isinstance(x, torch.Tensor) and x.device.type != "meta" else x


def _meta_device_to_cpu(x: Any) -> Any:
    if isinstance(x, torch.device) and x.type == "meta":
        return CPU
    if isinstance(x, str) and x == "meta":
        return "cpu"
    return x


class MetaPlacement:
    """Where each op of a lowering runs when parameters are on the meta device (module
    docstring): operands with a meta tensor -> everything on meta; real operands only -> CPU,
    with meta device arguments replaced by the CPU."""

    def args(self, target: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if target in _VALUE_FREE_METHODS or target in _VALUE_FREE_FUNCTIONS:
            # x.new_zeros(...), torch.ones_like(x): only x's shape and dtype are read, the
            # result's values are known: compute it on the CPU
            args = (_cpu_stand_in(args[0]),) + tuple(args[1:]) if args else args
        if _has_meta(args) or _has_meta(kwargs):
            if args and isinstance(args[0], torch.Tensor) and args[0].device.type != "meta" \
                    and _mutates(target):
                # moving the real tensor to meta would write into a copy and leave the
                # original (read later as a constant) unchanged: a wrong graph, never allowed
                from asymspec.errors import UserError

                raise UserError(f"--meta: '{_name(target)}' writes values computed from "
                                "parameters into a tensor that does not depend on them; this "
                                "cannot be followed on the meta device: audit without --meta "
                                "(or with a smaller config)")
            return _map(args, _to_meta), _map(kwargs, _to_meta)
        return _map(args, _meta_device_to_cpu), _map(kwargs, _meta_device_to_cpu)

    def module_args(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        on_meta = any(p.device.type == "meta" for p in module.parameters()) or \
            any(b.device.type == "meta" for b in module.buffers())
        if on_meta:
            return _map(args, _to_meta), _map(kwargs, _to_meta)
        return self.args(None, args, kwargs)


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _mutates(target: Any) -> bool:
    """Whether an fx target writes into its first operand (``x[i] = v``, ``x.add_(v)``, a
    mutating ATen overload)."""
    import operator

    if target is operator.setitem:
        return True
    if isinstance(target, str):
        return target.endswith("_") and not target.endswith("__")
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return bool(getattr(schema, "is_mutable", False))
    return getattr(target, "__name__", "").endswith("_")


_VALUE_FREE_METHODS = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}
_VALUE_FREE_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}


def _cpu_stand_in(x: Any) -> Any:
    """A CPU tensor with ``x``'s shape and dtype (never written: ``torch.empty``)."""
    if isinstance(x, torch.Tensor) and x.device.type == "meta":
        return torch.empty(x.shape, dtype=x.dtype)
    return x


# ----------------------------------------------------------------------------- the twin
# transformers config keys, by role.  Widths are reduced, ratios between them kept where they
# define structure (query heads per key-value head); layer counts are capped.
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_HEADS = ("num_attention_heads", "n_head")
_KV_HEADS = ("num_key_value_heads",)
_HIDDEN = ("hidden_size", "n_embd", "d_model")
_HEAD_DIM = ("head_dim",)
_INTERMEDIATE = ("intermediate_size", "n_inner")
_VOCAB = ("vocab_size",)
_POSITIONS = ("max_position_embeddings", "n_positions")
_TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id")


def _get(cfg: dict, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        if cfg.get(k) is not None:
            return k, cfg[k]
    return None, None


def twin_config(config: dict, layers: int = 2, kv_heads: int = 2, head_dim: int = 8,
                vocab: int = 96) -> tuple[dict, list[str]]:
    """A width-reduced twin of a transformers-style ``config``: the same keys with
    ``min(layers, L)`` layers, ``min(kv_heads, K)`` key-value heads and as many query heads per
    key-value head as the original, ``head_dim`` per head, the MLP width in the original ratio to
    the hidden width (rounded up to an even number), ``min(vocab, V)`` tokens.  Returns (twin,
    notes: one line per changed key).  A config without recognisable widths is returned as is
    (the twin then *is* the model, built with weights -- the caller says so)."""
    twin = dict(config)
    notes: list[str] = []

    def put(key: str | None, value: Any) -> None:
        if key is not None and twin.get(key) != value:
            notes.append(f"{key}: {config.get(key)} -> {value}")
            twin[key] = value

    k_layers, n_layers = _get(config, _LAYERS)
    if k_layers is not None:
        put(k_layers, min(int(n_layers), layers))
    k_heads, heads = _get(config, _HEADS)
    k_hidden, hidden = _get(config, _HIDDEN)
    if k_heads is not None and k_hidden is not None:
        heads = int(heads)
        k_kv, kv = _get(config, _KV_HEADS)
        kv = int(kv) if kv is not None else heads
        per_kv = max(1, heads // max(kv, 1))
        new_kv = min(kv, kv_heads)
        new_heads = per_kv * new_kv if heads % max(kv, 1) == 0 else min(heads, per_kv * new_kv)
        new_hidden = new_heads * head_dim
        put(k_heads, new_heads)
        if k_kv is not None:
            put(k_kv, new_kv)
        k_hd, _ = _get(config, _HEAD_DIM)
        if k_hd is not None:
            put(k_hd, head_dim)
        put(k_hidden, new_hidden)
        k_int, inter = _get(config, _INTERMEDIATE)
        if k_int is not None:
            ratio = float(inter) / float(hidden)
            new_int = max(2, 2 * round(ratio * new_hidden / 2))
            put(k_int, new_int)
    k_vocab, v = _get(config, _VOCAB)
    if k_vocab is not None:
        put(k_vocab, min(int(v), vocab))
        for key in _TOKENS:
            tok = twin.get(key)
            if isinstance(tok, int) and tok >= twin[k_vocab]:
                put(key, twin[k_vocab] - 1)
            elif isinstance(tok, list) and any(t >= twin[k_vocab] for t in tok):
                put(key, [min(t, twin[k_vocab] - 1) for t in tok])
    return twin, notes


def config_defaults(obj: Any) -> dict:
    """The width settings a transformers model class uses when its config does not set them
    (``GPT2LMHeadModel``: ``n_layer=12, n_embd=768, ...``), so that ``--meta`` with an empty or
    partial config still gets a twin.  Only keys the config stores itself (not aliases) are
    returned; ``{}`` for anything that is not a transformers class."""
    config_class = getattr(obj, "config_class", None)
    if config_class is None:
        return {}
    try:
        stored = config_class().to_dict()
    except Exception:  # a config class that needs arguments: no defaults
        return {}
    keys = _LAYERS + _HEADS + _KV_HEADS + _HIDDEN + _HEAD_DIM + _INTERMEDIATE + _VOCAB + \
        _TOKENS  # token ids too: the twin's smaller vocabulary must still contain them
    return {k: stored[k] for k in keys if stored.get(k) is not None}


def describe_config(config: dict) -> str:
    """The structural settings of a config, for messages (layers, widths, heads, vocab)."""
    parts = []
    for keys in (_LAYERS, _HIDDEN, _INTERMEDIATE, _HEADS, _KV_HEADS, _HEAD_DIM, _VOCAB):
        k, v = _get(config, keys)
        if k is not None:
            parts.append(f"{k}={v}")
    return ", ".join(parts) if parts else "(no width settings)"


# ----------------------------------------------------------------------------- the audit
@contextlib.contextmanager
def float64_default() -> Iterator[None]:
    """The twin runs in float64 throughout: tensors a model creates itself (``torch.zeros(n,
    device=x.device)``) must match its float64 weights."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with parameters on the meta device; raises UserError when a buffer was
    computed from parameters (it has no values, and values of buffers are what the audit
    reads)."""
    from asymspec.errors import UserError

    with parameters_on_meta():
        model = build()
    missing = meta_buffers(model)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5})" if len(missing) > 5 else "")
        raise UserError(f"--meta: buffer(s) {shown} were computed from parameters when the model "
                        "was built, so they have no values on the meta device; their values can "
                        "decide symmetries (masks, fixed weights), so the audit does not guess: "
                        "audit without --meta")
    return model


def twin_inputs(inputs: tuple, twin_config_: dict) -> tuple:
    """The example inputs for the twin: float inputs in float64, token ids reduced modulo the
    twin's vocabulary (when it has one)."""
    _, vocab = _get(twin_config_, _VOCAB)
    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            out.append(x.double())
        elif isinstance(x, torch.Tensor) and vocab is not None:
            out.append(x % int(vocab))
        else:
            out.append(x)
    return tuple(out)


def audit_meta(build: Callable[[dict], nn.Module], config: dict, inputs: tuple,
               name: str | None = None, tracer: str = "auto", numeric: bool = True,
               twin_overrides: dict | None = None,
               forward_check: Callable[[nn.Module, tuple], None] | None = None,
               defaults: dict | None = None) -> Any:
    """Audit ``build(config)`` with parameters on the meta device (module docstring) and, with
    ``numeric``, run the whole audit -- numeric check included -- on the width-reduced twin
    ``build(twin_config(config) | twin_overrides)`` with float64 weights.

    Returns the :class:`~asymspec.audit.AuditReport` of the full-size model; its ``meta`` field
    holds what was not inspected, the twin's settings, verdict, order and numeric result, and
    the time of each phase.  The twin's failed numeric check raises
    :class:`~asymspec.audit.numeric.AuditError` like the ordinary audit.  ``forward_check(twin,
    inputs)`` (the CLI's) runs first: a model that fails on the example inputs is a user error,
    found on the twin before anything is built on meta (a forward pass on meta cannot run the
    data-dependent checks some models make).  ``defaults``: width settings the builder uses when
    ``config`` omits them (:func:`config_defaults`), so the twin can reduce them."""
    import time

    from asymspec.audit import audit
    from asymspec.audit import trace as _trace
    from asymspec.errors import UserError

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    twin_model = None
    twin_notes: list[str] = []
    if not numeric and forward_check is not None:
        # no numeric check, but a model that fails on the inputs is still a user error: run
        # them through the twin when it is small (meta kernels skip many input checks)
        small, twin_notes = twin_config(dict(defaults or {}, **config))
        small.update(twin_overrides or {})
        if twin_notes or twin_overrides:
            twin_notes = twin_notes or ["--twin-config"]
            with float64_default():
                forward_check(build(small).double().eval(), twin_inputs(inputs, small))
    if numeric:
        twin, notes = twin_config(dict(defaults or {}, **config))
        twin.update(twin_overrides or {})
        notes += [f"{k}: {config.get(k)} -> {v} (--twin-config)"
                  for k, v in (twin_overrides or {}).items()]
        t1 = time.perf_counter()
        with float64_default():
            twin_model = build(twin).double().eval()
            t_in = twin_inputs(inputs, twin)
            if forward_check is not None:
                forward_check(twin_model, t_in)
        times["twin_s"] = time.perf_counter() - t1
        if not notes and parameter_count(twin_model) > 50_000_000:
            raise UserError("--meta: no width settings recognised in the config, so the "
                            "numeric check's twin would be the full-size model; pass "
                            "--twin-config with small widths, or --no-numeric")
    t0 = time.perf_counter()
    model = build_on_meta(lambda: build(config)).eval()
    times["build_s"] = time.perf_counter() - t0
    params = parameter_count(model)
    stored = non_meta_parameters(model)
    _trace.STATS["trace_s"] = 0.0
    report = audit(model, inputs, name=name, numeric=False, tracer=tracer,
                   placement=MetaPlacement())
    times["trace_s"] = _trace.STATS["trace_s"]
    times["lower_s"] = report.timings["lower_s"] - times["trace_s"]
    times["verify_s"] = report.timings["check_s"]
    lines = [VALUES_NOTE,
             f"meta device: {params:,} parameters without storage"
             + (f" ({len(stored)} created outside register_parameter hold storage: "
                f"{', '.join(stored[:3])})" if stored else "")]
    info: dict[str, Any] = {"parameters": params, "values_inspected": False,
                            "note": VALUES_NOTE, "stored_parameters": stored}
    if twin_model is not None:
        t1 = time.perf_counter()
        with float64_default():
            twin_report = audit(twin_model, t_in, name=f"{name or type(model).__name__} (twin)",
                                numeric=True, tracer=tracer)
        times["twin_s"] += time.perf_counter() - t1
        num = twin_report.numeric
        info["twin"] = {
            "config": {k: twin[k] for k in twin if twin[k] != config.get(k)},
            "changes": notes,
            "structure": describe_config(twin),
            "parameters": parameter_count(twin_model),
            "verdict": twin_report.verdict,
            "log10_order": twin_report.log10_order,
            "unsupported": len(twin_report.unsupported),
            "numeric_check": num.as_dict() if num else None,
        }
        what = ("a width-reduced twin" if notes else
                "the same config built with weights (its widths are already small, or none "
                "were recognised)")
        lines.append(f"numeric check ran on {what} ({describe_config(twin)}; "
                     f"{parameter_count(twin_model):,} float64 parameters): verdict "
                     f"{twin_report.verdict}, log10|Aut| {twin_report.log10_order:.2f}, "
                     + (num.summary().replace(" on the module", "") if num
                        else "no generators to check"))
        if twin_report.verdict != report.verdict or \
                bool(twin_report.unsupported) != bool(report.unsupported):
            lines.append(f"warning: the twin's verdict ({twin_report.verdict}, "
                         f"{len(twin_report.unsupported)} unsupported ops) differs in kind from "
                         f"the full-size model's ({report.verdict}, {len(report.unsupported)})")
    else:
        lines.append("numeric check: skipped (--no-numeric); generators were not verified on "
                     "any module")
        if forward_check is not None and twin_notes:
            lines.append("(the example inputs were run through the width-reduced twin)")
    info["timings"] = dict(times, total_s=sum(times.values()))
    info["lines"] = lines
    report.meta = info
    return report
