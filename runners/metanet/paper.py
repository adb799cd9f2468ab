"""The paper's numbers (Lim et al. 2024, Table 3 and Table 6; test set, mean ± std of 5 runs).

Columns: ``resnet`` (standard ResNet8), ``w_asym`` (W-Asym ResNet8), ``smaller`` (the smaller
standard ResNet8 of Table 6, 14/28/56 channels).  Each cell is ``(R² mean, R² std, τ mean,
τ std)``.
"""

from __future__ import annotations

COLUMNS = {"resnet": "ResNet", "w_asym": "W-Asym ResNet", "smaller": "Smaller ResNet"}
LABELS = {"mlp": "MLP", "dmc": "DMC", "deepsets": "DeepSets", "statnn": "StatNN"}

TABLE = {
    "mlp": {"resnet": (.330, .04, .389, .03), "w_asym": (.594, .12, .864, .01),
            "smaller": (.348, .07, .400, .02)},
    "dmc": {"resnet": (.950, .01, .787, .02), "w_asym": (.967, .01, .911, .01),
            "smaller": (.943, .01, .779, .01)},
    "deepsets": {"resnet": (.855, .01, .617, .03), "w_asym": (.936, .00, .858, .00),
                 "smaller": (.849, .01, .627, .01)},
    "statnn": {"resnet": (.976, .00, .866, .00), "w_asym": (.978, .00, .935, .01),
               "smaller": (.976, .00, .869, .00)},
}

#: final learning rates of the reference (Table 14; MLP on ResNet: 1e-2 in final_mlp.sh)
FINAL_LR = {"dmc": {"resnet": 1e-3, "w_asym": 5e-3}, "deepsets": {"resnet": 1e-2, "w_asym": 5e-3},
            "statnn": {"resnet": 1e-3, "w_asym": 1e-2}, "mlp": {"resnet": 1e-4, "w_asym": 1e-4}}


def guess_column(variant: str) -> str:
    """The paper column a zoo variant most likely corresponds to, from its name."""
    v = variant.lower().replace("-", "_")
    if "smaller" in v or "small" in v:
        return "smaller"
    if "w_asym" in v or "wasym" in v or "sparse" in v:
        return "w_asym"
    if "sigma" in v or "asym" in v:
        return "none"
    return "resnet"
