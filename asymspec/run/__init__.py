"""Experiment runs: ``asymspec run SPEC`` (see :mod:`asymspec.run.engine`).

Public API::

    from asymspec.run import run_experiment, report, load_experiment, Runner, Unit, register
"""

from asymspec.run.base import Runner, Unit
from asymspec.run.engine import report, run_experiment
from asymspec.run.registry import available, get_runner, register
from asymspec.run.spec import Experiment, load_experiment

__all__ = ["Experiment", "Runner", "Unit", "available", "get_runner", "load_experiment",
           "register", "report", "run_experiment"]
