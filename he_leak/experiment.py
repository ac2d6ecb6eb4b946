"""Compatibility names for code written before the pipeline was split; new code imports from the modules below.

he_leak.spec          experiment files → runs, expectations, plots
he_leak.expectations  [[expect]] and [[plot]] statistics
he_leak.store         results.jsonl, lock, summary.csv
he_leak.sweep         run_experiment: spec − store → engine → store → report
"""

from he_leak.expectations import Expectation, ExpectationResult, Plot
from he_leak.spec import Experiment, load_experiment
from he_leak.store import (
    RESULTS_FILE,
    RUNS_DIR,
    SUMMARY_FILE,
    append_result,
    config_id,
    read_results,
    run_hash,
    summary_csv,
)
from he_leak.sweep import FIGURES_DIR, REPORT_FILE, ExperimentReport, experiment_rows, run_experiment
from he_leak.text import describe_run

__all__ = [
    "FIGURES_DIR", "REPORT_FILE", "RESULTS_FILE", "RUNS_DIR", "SUMMARY_FILE", "Expectation", "ExpectationResult",
    "Experiment", "ExperimentReport", "Plot", "append_result", "config_id", "describe_run", "experiment_rows",
    "load_experiment", "read_results", "run_experiment", "run_hash", "summary_csv",
]  # fmt: skip
