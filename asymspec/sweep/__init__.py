"""Sweeps over spec fields: grid expansion (:mod:`.grid`), curve metrics (:mod:`.curves`) and
figures (:mod:`.plots`).  The ``sweep`` runner (``runners/sweep``) runs each cell as its own
resumable experiment run."""

from asymspec.sweep.curves import epochs_to_threshold, lookup, mean_curve
from asymspec.sweep.grid import Cell, expand, model_overrides, scale_count

__all__ = ["Cell", "epochs_to_threshold", "expand", "lookup", "mean_curve", "model_overrides",
           "scale_count"]
