"""What each `he-leak` subcommand does with its parsed options (imports are deferred: the CLI starts fast)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from he_leak.errors import ConfigError

EXIT_UNMET = 1


def cmd_attack(args: argparse.Namespace) -> int:
    from he_leak.config import RunConfig
    from he_leak.runner import run_outcome
    from he_leak.seeds import KeySeed

    names = {f.name for f in dataclasses.fields(RunConfig)} - {"encryptor_params"}
    values = {k: v for k, v in vars(args).items() if k in names}
    cfg = RunConfig.from_mapping({**values, "encryptor_params": dict(args.he)}, where="options")
    key_seed = None if args.key_seed is None else KeySeed.from_hex(args.key_seed)
    if args.out is not None:
        from he_leak.sweep.preflight import check_output

        check_output(args.out)
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

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(json.dumps(row, indent=2) + "\n")
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
    from he_leak.sweep.driver import run_experiment

    report = run_experiment(
        args.experiment, args.out, check=args.check, engine=args.engine, workers=args.workers, address=args.address,
        limit=args.limit, quiet=args.quiet,
    )  # fmt: skip
    print(report.summary(), flush=True)
    if args.check and report.unmet:
        print(f"{len(report.unmet)} expectation(s) not met:", file=sys.stderr)
        for line in report.unmet:
            print(f"  - {line}", file=sys.stderr)
        return EXIT_UNMET
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from he_leak.sweep.status import folder_status, format_status

    print(format_status(folder_status(args.out)))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from he_leak.report.protection import markdown
    from he_leak.sweep.store import RESULTS_FILE, latest_by_config, read_results

    path = args.results / RESULTS_FILE if args.results.is_dir() else args.results
    if not path.is_file():
        raise ConfigError(f"{path}: no such results file; give a results.jsonl or the --out folder of `he-leak run`")
    text = markdown(list(latest_by_config(read_results(path)).values()))
    if not text:
        raise ConfigError(f"{path} holds fewer than two protections: there is no protection table to print")
    print(text, end="")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from he_leak.config import RunConfig
    from he_leak.data import load_dataset
    from he_leak.models.audit import audit, format_audit
    from he_leak.scenarios import model_spec

    shape = load_dataset(args.data, layout=args.layout, normalize=args.normalize).shape
    cfg = RunConfig(model=args.model, classes=args.classes, hidden=args.hidden, width=args.width, stride=args.stride,
                    activation=args.activation, seed=args.seed, weights=args.weights,
                    model_mode=args.model_mode)  # fmt: skip
    spec = model_spec(cfg, shape)
    result = audit(spec, batch=args.batch)
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
    "attack": cmd_attack, "run": cmd_run, "status": cmd_status, "table": cmd_table, "audit": cmd_audit,
    "bench": cmd_bench, "list": cmd_list,
}  # fmt: skip


