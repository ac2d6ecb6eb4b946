"""What each `he-leak` subcommand does with its parsed options (imports are deferred: the CLI starts fast)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from he_leak.errors import ConfigError

EXIT_UNMET = 1


def config_from_args(args: argparse.Namespace) -> Any:
    """The RunConfig of the options the user gave (argparse leaves the others None): RunConfig.from_mapping refuses
    a given option the run does not use, even at its default value."""
    from he_leak.config import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)} - {"encryptor_params"}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if getattr(args, "he", None) is not None:
        values["encryptor_params"] = dict(args.he)
    return RunConfig.from_mapping(values, where=None)


def cmd_attack(args: argparse.Namespace) -> int:
    from he_leak.runner import run_outcome
    from he_leak.seeds import KeySeed

    cfg = config_from_args(args)
    key_seed = None if args.key_seed is None else KeySeed.from_hex(args.key_seed)
    if args.out is not None:
        from he_leak.sweep.preflight import check_output

        check_output(args.out)  # probed by creating it (and a file in it), then removed: nothing is left on failure
    from he_leak.sweep.progress import make_display

    display = make_display()  # the sweep's display for one run: a live bar on a terminal, else a line every 5 s
    display.begin(1, 0)
    try:
        outcome = run_outcome(cfg, progress=display.step, key_seed=key_seed)
    finally:
        display.end()
    row = outcome.result.to_dict()
    if args.out is not None:
        from he_leak.report.figures import save_run_figure
        from he_leak.sweep.store import write_atomic

        write_atomic(args.out / "result.json", json.dumps(row, indent=2) + "\n")
        if outcome.panels:
            save_run_figure(outcome.panels, args.out / "reconstruction.png")
        if "reconstruction" in outcome.panels:  # an unscored run: the recovered inputs and labels themselves
            import numpy as np

            np.savez(args.out / "reconstruction.npz", **outcome.panels)
    if args.json:
        print(json.dumps(row))
    else:
        from he_leak.report.markdown import format_result

        print(format_result(row))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from he_leak.ci import github
    from he_leak.sweep.driver import run_experiment

    if args.junit_xml is not None:
        from he_leak.ci.junit import check_path

        check_path(args.junit_xml)
    report = run_experiment(
        args.experiment, args.out, check=args.check, engine=args.engine, workers=args.workers, address=args.address,
        limit=args.limit, quiet=args.quiet, force=args.force,
    )  # fmt: skip
    print(report.summary(), flush=True)
    if report.expectations:
        n, met, unmet = len(report.expectations), sum(e.met is True for e in report.expectations), len(report.unmet)
        state = "all met" if met == n else f"{met} met, {unmet} unmet, {n - met - unmet} pending"
        print(f"{n} expectation(s) checked, {state}:")
        for e in report.expectations:
            print(f"  - {e.line()}")
    if args.junit_xml is not None or github.active():
        from he_leak.ci.checks import publish

        publish(report, junit=args.junit_xml)
    if args.check and report.unmet:
        print(f"{len(report.unmet)} expectation(s) not met:", file=sys.stderr)
        for line in report.unmet:
            print(f"  - {line}", file=sys.stderr)
        return EXIT_UNMET
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from he_leak.ci.diff import diff_cases, diff_folders
    from he_leak.ci.junit import check_path, junit_xml
    from he_leak.report.protection import STOP_MARGIN_DB
    from he_leak.sweep.store import write_atomic

    if args.junit_xml is not None:
        check_path(args.junit_xml)
    diff = diff_folders(args.base, args.new, tolerance=STOP_MARGIN_DB if args.tolerance_db is None else
                        args.tolerance_db)  # fmt: skip
    print("\n".join(diff.lines()), flush=True)
    if args.junit_xml is not None:
        write_atomic(args.junit_xml, junit_xml(f"{diff.name} (he-leak diff)", diff_cases(diff)))
    return EXIT_UNMET if diff.regressions else 0


def cmd_status(args: argparse.Namespace) -> int:
    from he_leak.sweep.status import folder_status, format_status

    print(format_status(folder_status(args.out)))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from he_leak.report import frontier, keys, protection
    from he_leak.sweep.store import RESULTS_FILE, latest_by_config, read_results

    path = args.results / RESULTS_FILE if args.results.is_dir() else args.results
    if not path.is_file():
        raise ConfigError(f"{path}: no such results file; give a results.jsonl or the --out folder of `he-leak run`")
    view = getattr(args, "view", "protection")
    make = {"protection": protection.markdown, "frontier": frontier.markdown, "key-recovery": keys.markdown}[view]
    text = make(list(latest_by_config(read_results(path)).values()))
    if not text:
        need = "no he-train run with --key-recovery" if view == "key-recovery" else "fewer than two protections"
        raise ConfigError(f"{path} holds {need}: there is no {view} table to print")
    print(text, end="")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from he_leak.data import load_dataset
    from he_leak.models import memory, shape_model
    from he_leak.models.audit import audit, format_audit
    from he_leak.scenarios import model_spec

    cfg = config_from_args(args)
    shape = load_dataset(cfg.data, layout=cfg.layout, normalize=cfg.normalize).shape
    spec = model_spec(cfg, shape)
    memory.check(memory.audit_estimate(shape_model(spec), spec.input_shape, batch=cfg.batch))
    result = audit(spec, batch=cfg.batch)
    print(json.dumps(result.to_dict()) if args.json else format_audit(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from he_leak.bench.run import run_from_args

    return run_from_args(args)


def cmd_list(args: argparse.Namespace) -> int:
    import encryptors
    from he_leak.attacks import ATTACKS
    from he_leak.data import DATASETS
    from he_leak.models import MODELS
    from he_leak.scenarios import SCENARIOS

    for reg in (SCENARIOS, encryptors.ENCRYPTORS, ATTACKS, MODELS, DATASETS):
        print(f"{reg.kind}s: {', '.join(sorted(reg))}")
    return 0


COMMANDS = {
    "attack": cmd_attack, "run": cmd_run, "diff": cmd_diff, "status": cmd_status, "table": cmd_table,
    "audit": cmd_audit, "bench": cmd_bench, "list": cmd_list,
}  # fmt: skip


