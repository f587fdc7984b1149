"""Reports: the tables, JSON and figures written by ``rgflow demo`` and ``rgflow run``.

Layer 6 (depends on recursions and ensembles).  :func:`run_report` for MLPs,
:func:`run_residual_report` for residual MLPs and pre-activation ResNets;
:func:`depthmup_report` for trained depth-μP ResNet depth sweeps (nfd.md §3).
"""

from ._common import machine_info, pyplot
from ._depthmup import depthmup_report, format_depthmup_table, make_depthmup_plots
from ._learning import LearnSpec, format_learning_table, run_learning_report
from ._mlp import REPORT_TENSORS, format_table, make_plots, representative_indices, run_report
from ._residual import ARCHITECTURES, format_residual_table, run_residual_report
from ._spec import EnsembleSpec, ResidualEnsembleSpec, ResidualRunSpec, RunSpec

__all__ = [
    "ARCHITECTURES",
    "REPORT_TENSORS",
    "EnsembleSpec",
    "LearnSpec",
    "ResidualEnsembleSpec",
    "ResidualRunSpec",
    "RunSpec",
    "depthmup_report",
    "format_depthmup_table",
    "format_learning_table",
    "format_residual_table",
    "make_depthmup_plots",
    "format_table",
    "machine_info",
    "pyplot",
    "make_plots",
    "representative_indices",
    "run_learning_report",
    "run_report",
    "run_residual_report",
]
