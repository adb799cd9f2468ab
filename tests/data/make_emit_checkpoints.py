"""Write ``emit_checkpoints_v1.*``: state_dicts, inputs and outputs of small emitted models.

Run once with the emitter as it was *before* the fast masked layers (commit 2feb70e) so that
``tests/test_emit_compat.py`` can check that checkpoints saved by earlier versions still load
and give the same outputs.  Re-running it with a newer emitter is pointless (it would compare
the code with itself); the files are committed.

    OMP_NUM_THREADS=1 python tests/data/make_emit_checkpoints.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
ALL = {"seed": 3, "w_asym": {"nfix": 2, "kappa": 1.0}, "syre": {"kappa": 0.25},
       "fixed_bias": {"k": 0.5, "layers": ["fc2"]}}


def specs() -> dict[str, dict]:
    """Tiny models covering every emitted layer kind and asymmetry combination."""
    siamese = [
        {"name": "enc", "op": "linear", "in": "x1", "out_features": 5},
        {"name": "enc_b", "op": "linear", "in": "x2", "out_features": 5, "share": "enc"},
        {"name": "a1", "op": "activation", "in": "enc", "fn": "relu"},
        {"name": "a2", "op": "activation", "in": "enc_b", "fn": "relu"},
        {"name": "sum", "op": "add", "in": ["a1", "a2"]},
        {"name": "head", "op": "linear", "in": "sum", "out_features": 2},
    ]
    return {
        "mlp_all": {"name": "mlp_all", "asymmetry": ALL, "model": {
            "family": "mlp", "input_dim": 6, "widths": [7, 5], "output_dim": 3,
            "norm": "layernorm", "activation": "relu"}},
        "mlp_sigma": {"name": "mlp_sigma", "asymmetry": {"seed": 1, "sigma_asym": {
            "f_std": 1.0}, "w_asym": {"nfix": 1}}, "model": {
            "family": "mlp", "input_dim": 6, "widths": [5], "output_dim": 3,
            "norm": "batchnorm", "activation": "gelu"}},
        "cnn_filters": {"name": "cnn_filters", "asymmetry": {"seed": 2, "w_asym": {
            "nfix": 2, "mode": "filters"}, "sigma_asym": {"f_std": 0.5}}, "model": {
            "family": "cnn", "in_channels": 4, "input_size": 6, "channels": [4, 5],
            "strides": [1, 2], "num_classes": 3, "activation": "relu", "norm": "batchnorm"}},
        "resnet_syre": {"name": "resnet_syre", "asymmetry": {"seed": 4, "syre": {
            "kappa": 0.1}, "w_asym": {"nfix": 2}}, "model": {
            "family": "resnet", "depth": 8, "base_width": 3, "in_channels": 2,
            "input_size": 8, "num_classes": 3, "norm": "layernorm", "shortcut": "A"}},
        "gnn_sigma": {"name": "gnn_sigma", "asymmetry": {"seed": 5, "sigma_asym": {
            "f_std": 1.0}}, "model": {"family": "gnn", "in_dim": 5, "hidden_dim": 4,
                                      "layers": 2, "out_dim": 3, "norm": "layernorm"}},
        "transformer_wasym": {"name": "transformer_wasym", "asymmetry": {"seed": 6, "w_asym": {
            "nfix": 2}}, "model": {"family": "transformer", "input_dim": 5, "seq_len": 3,
                                   "d_model": 8, "heads": 2, "mlp_ratio": 1, "layers": 1,
                                   "num_classes": 3}},
        "siamese_wasym": {"name": "siamese", "asymmetry": {"seed": 0, "w_asym": {"nfix": 1}},
                          "model": {"family": "layers",
                                    "inputs": {"x1": {"shape": [6]}, "x2": {"shape": [6]}},
                                    "layers": siamese}},
    }


def main() -> None:
    import asymspec

    torch.set_num_threads(1)
    tensors: dict[str, torch.Tensor] = {}
    meta = {}
    for key, spec in specs().items():
        ir = asymspec.compile_ir(spec)
        model = asymspec.nn.emit(ir, init_seed=11)
        # a few AdamW steps so trainable and frozen raw entries differ from their init
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.3)
        for step in range(3):
            inputs = asymspec.example_inputs(ir, batch=4, seed=step)
            opt.zero_grad()
            model(*inputs).square().mean().backward()
            opt.step()
        model.eval()
        inputs = asymspec.example_inputs(ir, batch=4, seed=99)
        with torch.no_grad():
            out = model(*inputs)
        for k, v in model.state_dict().items():
            tensors[f"{key}/state/{k}"] = v.contiguous()
        for i, x in enumerate(inputs):
            tensors[f"{key}/input/{i}"] = x.contiguous()
        tensors[f"{key}/output"] = out.contiguous()
        meta[key] = {"spec": spec, "n_inputs": len(inputs)}
    save_file(tensors, HERE / "emit_checkpoints_v1.safetensors")
    (HERE / "emit_checkpoints_v1.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
