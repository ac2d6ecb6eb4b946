"""The `he-leak` command line: attack, run, audit, bench, list. Bad input → one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from he_leak.errors import HeLeakError

EXIT_BAD_INPUT = 2
EXIT_UNMET = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (naming --help) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 64,32") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. poly_modulus_degree=8192")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lenet", help="model name (see `he-leak list`)")
    p.add_argument("--data", default="digits", help="dataset name or a path (PNG/JPEG, .npy, .npz, folder)")
    p.add_argument("--batch", type=int, default=1, help="batch size B of the shared gradient")
    p.add_argument("--classes", type=int, default=10, help="number of classes of the model (default 10)")
    p.add_argument("--hidden", type=_csv_ints, default=(64, 32), help="mlp hidden widths, e.g. 64,32")
    p.add_argument("--width", type=int, default=12, help="convnet / conv1 kernels per layer")
    p.add_argument("--stride", type=int, default=2, help="conv1's stride")
    p.add_argument("--activation", default="sigmoid", help="activation: sigmoid, tanh, relu, leaky_relu, softplus")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's weights and the attack")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="he-leak", description="Gradient inversion against homomorphically encrypted training data.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    a = sub.add_parser("attack", help="run one attack and print its Result")
    a.add_argument("--scenario", default="plain", help="threat model: plain, ckks-input, …")
    a.add_argument("--attack", default="dlg", help="attack name: dlg, idlg, ig, analytic, layerwise")
    _model_args(a)
    a.add_argument("--index", type=int, default=0, help="index of the first sample in the dataset")
    a.add_argument("--iterations", type=int, default=None, help="attack iterations (default: the attack's own)")
    a.add_argument("--restarts", type=int, default=1, help="random restarts, batched through one pass")
    a.add_argument("--lr", type=float, default=None, help="attack learning rate (default: the attack's own)")
    a.add_argument("--tv", type=float, default=None, help="total-variation weight for ig")
    a.add_argument("--encryptor", default=None, help="encryptor for ckks-input: ckks, bfv, permute, linear-mask, plain")
    a.add_argument("--he", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="encryptor parameter, e.g. --he poly_modulus_degree=8192 --he view=residues")  # fmt: skip
    a.add_argument("--insecure", action="store_true", help="allow HE parameters below 128-bit security")
    a.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    a.add_argument(
        "--out", type=Path, default=None, help="folder for result.json and a PNG (truth above, recovery below)"
    )
    a.add_argument("--json", action="store_true", help="print exactly one JSON object (the Result)")

    r = sub.add_parser("run", help="run an experiment file (a grid of attacks) and write its report")
    r.add_argument("experiment", type=Path, help="experiment TOML file, e.g. experiments/plain_baseline.toml")
    r.add_argument("--out", type=Path, required=True, help="output folder (results.jsonl, summary.csv, report.md)")
    r.add_argument("--check", action="store_true", help="exit 1 listing every unmet [[expect]] row")

    d = sub.add_parser("audit", help="per-layer rank analysis: can the input be reconstructed exactly?")
    _model_args(d)
    d.add_argument("--json", action="store_true", help="print one JSON object")

    b = sub.add_parser("bench", help="plain DLG loop versus the project's dlg, side by side")
    b.add_argument("--pairs", type=int, default=10, help="(image, seed) pairs")
    b.add_argument("--steps", type=int, default=300, help="L-BFGS steps")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    b.add_argument("--json", action="store_true")

    sub.add_parser("list", help="list the registered scenarios, encryptors, attacks, models and datasets")
    return parser


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on a terminal, else a no-op callback."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                  TimeElapsedColumn(), transient=True) as bar:  # fmt: skip
        task = bar.add_task("attack", total=None, loss="")

        def update(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"loss {loss:.3g}")

        yield update


def cmd_attack(args: argparse.Namespace) -> int:
    from he_leak.config import RunConfig
    from he_leak.runner import run_one

    cfg = RunConfig(
        scenario=args.scenario, attack=args.attack, model=args.model, data=args.data, index=args.index,
        seed=args.seed, batch=args.batch, iterations=args.iterations, restarts=args.restarts, classes=args.classes,
        device=args.device, hidden=args.hidden, width=args.width, stride=args.stride, activation=args.activation,
        encryptor=args.encryptor, encryptor_params=dict(args.he), insecure=args.insecure, lr=args.lr, tv=args.tv,
    )  # fmt: skip
    with _progress(sys.stdout.isatty() and not args.json) as progress:
        outcome = run_one(cfg, progress=progress)
    row = outcome.result.to_dict()
    if args.out is not None:
        from he_leak.figures import save_run_figure

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(json.dumps(row, indent=2) + "\n")
        save_run_figure(outcome.panels, args.out / "reconstruction.png")
    if args.json:
        print(json.dumps(row))
    else:
        from he_leak.report import format_result

        print(format_result(row))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from he_leak.experiment import run_experiment

    report = run_experiment(args.experiment, args.out, check=args.check)
    if args.check and report.unmet:
        print(f"{len(report.unmet)} expectation(s) not met:", file=sys.stderr)
        for line in report.unmet:
            print(f"  - {line}", file=sys.stderr)
        return EXIT_UNMET
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from he_leak.audit import audit, format_audit
    from he_leak.data import load_dataset
    from he_leak.models import ModelSpec

    spec = ModelSpec(
        name=args.model, input_shape=load_dataset(args.data).shape, classes=args.classes, hidden=args.hidden,
        width=args.width, stride=args.stride, activation=args.activation, seed=args.seed,
    )  # fmt: skip
    result = audit(spec, batch=args.batch)
    print(json.dumps(result.to_dict()) if args.json else format_audit(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from he_leak.bench import main as bench_main

    argv = ["--pairs", str(args.pairs), "--steps", str(args.steps), "--device", args.device]
    argv += ["--threads", str(args.threads)] if args.threads is not None else []
    return bench_main(argv + (["--json"] if args.json else []))


def cmd_list(args: argparse.Namespace) -> int:
    import encryptors
    from he_leak.attacks import ATTACKS
    from he_leak.data import DATASETS
    from he_leak.models import MODELS
    from he_leak.scenarios import SCENARIOS

    for reg in (SCENARIOS, encryptors.ENCRYPTORS, ATTACKS, MODELS, DATASETS):
        print(f"{reg.kind}s: {', '.join(sorted(reg))}")
    return 0


COMMANDS = {"attack": cmd_attack, "run": cmd_run, "audit": cmd_audit, "bench": cmd_bench, "list": cmd_list}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HeLeakError as e:
        print(f"he-leak: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
