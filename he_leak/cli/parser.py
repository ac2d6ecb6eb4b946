"""The `he-leak` argument parser: one function per subcommand; a usage error is one line and exit code 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NoReturn

from he_leak.config import DISCLOSURES, HE_BACKENDS, LAYOUTS, ROLES, SELECTIONS, SENSITIVITIES

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (naming --help) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))  # an empty entry ("32,,16") is an error, not skipped
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 64,32 (no "
                                         "empty entry)") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. poly_modulus_degree=8192")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


# Options that set a RunConfig field default to None here: only what the user gives reaches RunConfig.from_mapping,
# which refuses a given option the run does not use, even at its default value (the defaults are RunConfig's).
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (see `he-leak list`; default lenet) or your own: "
                        "path/to/module.py:factory or package.module:factory (given input_shape and classes if it "
                        "takes them)")
    p.add_argument("--weights", metavar="FILE",
                   help="load the model's weights from a state_dict (.pt/.pth, or .safetensors with the safetensors "
                        "extra), strictly; default: the seeded initialisation")
    p.add_argument("--model-mode", choices=("eval", "train"), dest="model_mode",
                   help="how the client runs its model: eval (running statistics; the default) or train (BatchNorm "
                        "uses the batch's statistics and its running buffers travel with the update)")
    p.add_argument("--data", help="dataset name or a path (PNG/JPEG, .npy, .npz, folder; default digits)")
    p.add_argument("--batch", type=int, help="batch size B of the shared gradient (default 1)")
    p.add_argument("--classes", type=int, help="number of classes of the model (default 10)")
    p.add_argument("--hidden", type=_csv_ints, help="mlp hidden widths, e.g. 64,32 (the default)")
    p.add_argument("--width", type=int, help="convnet / conv1 kernels per layer (default 12)")
    p.add_argument("--stride", type=int, help="conv1's stride (default 2)")
    p.add_argument("--activation", default=None,
                   help="activation: sigmoid, tanh, relu, leaky_relu, softplus, square, sigmoid3 (default: the "
                        "scenario's: square for he-train, sigmoid otherwise)")  # fmt: skip
    p.add_argument("--seed", type=int, help="seed of the model's weights and the attack, 0 … 2**64 - 1 (default 0)")
    p.add_argument("--layout", choices=LAYOUTS,
                   help="axis order of a .npy/.npz array (n: images, c: channels); auto: 2-D hw, 3-D hwc if the last "
                        "axis is 1/3/4, chw if only the first is, else nhw; 4-D nhwc or nchw by the same test")
    p.add_argument("--normalize", action="store_true", default=None,
                   help="rescale a user file to [0,1] by the global min and max of the whole array (recorded in the "
                        "Result); without it values must lie in [0,1] (uint8/uint16 are scaled by their range)")


def _attack(sub: Any) -> None:
    """`he-leak attack`: one run's options, grouped as the scenarios use them."""
    a = sub.add_parser("attack", help="run one attack and print its Result")
    a.add_argument("--scenario",
                   help="threat model: plain (default), ckks-input, he-train, he-aggregate, secagg (docs/design.md)")
    a.add_argument("--attack", help="attack name: dlg (default), idlg, ig, analytic, layerwise")
    _model_args(a)
    a.add_argument("--index", type=int, help="index of the first sample in the dataset (default 0)")
    a.add_argument("--iterations", type=int, help="attack iterations (dlg, idlg, ig, analytic; default: the attack's)")
    a.add_argument("--restarts", type=int, help="random restarts of dlg, idlg, ig (ig: one batched pass; default 1)")
    a.add_argument("--lr", type=float, help="ig's learning rate, > 0 (default: its own)")
    a.add_argument("--tv", type=float, help="ig's total-variation weight, >= 0 (default: its own)")
    a.add_argument("--loss",
                   help="training loss: cross-entropy, mse, poly-sigmoid (default: the scenario's)")  # fmt: skip
    a.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where the attack runs: auto (default) = CUDA when available, else CPU")  # fmt: skip
    a.add_argument("--utility", action="store_true", default=None,
                   help="also train the model under this protection and record its test accuracy (utility)")
    _he_options(a)
    _federation_options(a)
    _local_options(a)
    df = a.add_argument_group("gradient defences (any scenario; applied in this order)")
    df.add_argument("--clip", type=float, help="clip the gradient's L2 norm to this bound")
    df.add_argument("--prune", type=float, help="zero this fraction of smallest entries per tensor (default 0)")
    df.add_argument("--noise", type=float, help="add Gaussian noise of this standard deviation (default 0)")
    a.add_argument("--out", type=Path, default=None,
                   help="folder for result.json and reconstruction.png (truth above, recovery below); probed "
                        "before the run")
    a.add_argument("--json", action="store_true", help="print exactly one JSON object (the Result) on stdout")


def _he_options(a: argparse.ArgumentParser) -> None:
    he = a.add_argument_group("encryption (ckks-input, he-train, he-aggregate)")
    he.add_argument("--encryptor",
                    help="ckks-input's encryptor: ckks (default), bfv, permute, linear-mask, plain")  # fmt: skip
    he.add_argument("--he", type=_key_value, action="append", metavar="KEY=VALUE",
                    help="HE parameter: poly_modulus_degree, coeff_mod_bit_sizes (a list, e.g. [40,20,40]), scale, "
                         "view (bytes|residues), plain_modulus (bfv); e.g. --he poly_modulus_degree=8192")  # fmt: skip
    he.add_argument("--insecure", action="store_true", default=None,
                    help="ckks-input: allow HE parameters beyond the 128-bit security table (recorded in the Result)")
    he.add_argument("--key-seed", default=None, dest="key_seed", metavar="HEX",
                    help="the key holder's secret, 64 hex digits (at least 32), to replay a run byte for byte; "
                         "default: fresh OS randomness. Never recorded in the Result (key_source says 'given')")


def _federation_options(a: argparse.ArgumentParser) -> None:
    fl = a.add_argument_group("federated aggregation (he-aggregate) and HE training (he-train)")
    fl.add_argument("--clients", type=int, help="clients K, each with its own --batch of samples (default 1)")
    fl.add_argument("--role", choices=ROLES,
                    help="who attacks: the aggregation server (no key; default), a key-holding client (the decrypted "
                         "aggregate), or a key holder the server controls and forwards each client's own "
                         "ciphertext to (a sybil)")  # fmt: skip
    fl.add_argument("--he-backend", choices=HE_BACKENDS, dest="he_backend",
                    help="he-aggregate: one CKKS key shared by every client (SEAL; default), or threshold CKKS where "
                         "decryption needs every client's share (OpenFHE: pip install -e '.[threshold]')")
    fl.add_argument("--imprint", type=int, metavar="BINS",
                    help="he-aggregate: a malicious server puts an imprint layer of BINS brightness bins in front "
                         "of the model (Fowl et al., Robbing the Fed); attack it with --attack imprint (default 0)")
    fl.add_argument("--encrypt-fraction", type=float, dest="encrypt_fraction",
                    help="fraction p of gradient entries each client encrypts, the rest sent in the clear (default 1)")
    fl.add_argument("--select", choices=SELECTIONS,
                    help="which entries a fraction 0 < p < 1 encrypts (default: FedML-HE's sensitivity map)")
    fl.add_argument("--sensitivity", choices=SENSITIVITIES,
                    help="--select sensitivity: each client's map exactly (every Jacobian column; default) or by "
                         "Hutchinson probes (16 per sample)")  # fmt: skip
    fl.add_argument("--sensitivity-samples", type=int, dest="sensitivity_samples", metavar="M",
                    help="--select sensitivity: samples of each client's own data its map is computed on (default 32)")
    fl.add_argument("--encrypt-layers", dest="encrypt_layers", metavar="REGEX",
                    help="encrypt whole parameters whose name matches REGEX (NVFlare's encrypt_layers)")
    fl.add_argument("--train-steps", type=int, dest="train_steps",
                    help="he-train: encrypted training steps after the attacked one (loss recorded; default 0)")
    fl.add_argument("--flood-bits", type=int, dest="flood_bits", metavar="B",
                    help="he-train: the key holder floods the shared decryption with Gaussian noise of standard "
                         "deviation 2**B in the coefficient domain (the IND-CPA-D mitigation; docs/design.md)")
    fl.add_argument("--key-recovery", action="store_true", default=None, dest="key_recovery",
                    help="he-train: the server also tries to recover the secret key from the decryptions it is "
                         "handed (IND-CPA-D) and, with it, decrypts the client's encrypted inputs")
    fl.add_argument("--disclosure", choices=DISCLOSURES,
                    help="he-train --key-recovery: what the key holder hands over of each decryption: the "
                         "gradient's entries (default), every slot's real part, or every slot (complex)")
    dp = a.add_argument_group("DP-SGD on the client (Opacus; plain, ckks-input, he-aggregate, secagg)")
    dp.add_argument("--dp-noise", type=float, dest="dp_noise", metavar="Z",
                    help="noise multiplier: each shared gradient is a DP-SGD step's (per-sample clipping, Gaussian "
                         "noise of std Z·C on the sum); the utility is trained with DP-SGD; ε from Opacus's RDP "
                         "accountant")  # fmt: skip
    dp.add_argument("--dp-clip", type=float, dest="dp_clip", metavar="C",
                    help="DP-SGD's per-sample L2 clipping bound (with --dp-noise; default 1.0)")


def _local_options(a: argparse.ArgumentParser) -> None:
    lo = a.add_argument_group("local training (FedAvg), a captured update, the model's training stage")
    lo.add_argument("--local-steps", type=int, dest="local_steps", metavar="E",
                    help="the client runs E SGD steps and shares its weight difference (0: one gradient, FedSGD)")
    lo.add_argument("--local-lr", type=float, dest="local_lr", metavar="LR",
                    help="the client's learning rate (needed with --local-steps)")
    lo.add_argument("--local-batch", type=int, dest="local_batch", metavar="b",
                    help="samples per local step, in the client's order (default: the whole --batch)")
    lo.add_argument("--no-unroll", action="store_false", default=None, dest="unroll",
                    help="dlg/idlg/ig: match a local update as one gradient instead of simulating the E steps")
    lo.add_argument("--bn-prior", type=float, dest="bn_prior", metavar="WEIGHT",
                    help="ig: weight of the BatchNorm prior (the batch statistics the running buffers reveal)")
    lo.add_argument("--update", metavar="FILE",
                    help="attack an update captured from a real FL run (.npz/.npy/.pt; docs/design.md) instead of "
                         "simulating one; needs --weights GLOBAL")  # fmt: skip
    lo.add_argument("--update-kind", choices=("delta", "weights", "gradient"), dest="update_kind",
                    help="what --update holds: the weight difference, the client's weights after training (Flower's "
                         "fit() result) or one gradient")  # fmt: skip
    lo.add_argument("--truth", action="store_true", default=None, dest="update_truth",
                    help="--update was computed on the samples --data/--index/--batch select: score against them "
                         "(default: the truth is unknown and nothing is scored)")  # fmt: skip
    lo.add_argument("--pretrain-epochs", type=int, dest="pretrain_epochs", metavar="N",
                    help="train the model N epochs on the dataset without the attacked samples first")


def _run(sub: Any) -> None:
    """`he-leak run`: an experiment file into a results folder."""
    r = sub.add_parser(
        "run", help="run an experiment file (a grid of attacks) and write its report",
        description="Run every run of the experiment not yet recorded in --out (resumable: rerun after Ctrl-C or a "
        "crash), then write summary.csv, report.md and figures/.",
    )  # fmt: skip
    r.add_argument("experiment", type=Path, help="experiment TOML file, e.g. experiments/plain_baseline.toml")
    r.add_argument("--out", type=Path, required=True, help="output folder (results.jsonl, summary.csv, report.md)")
    r.add_argument("--check", action="store_true", help="exit 1 listing every unmet [[expect]] row")
    r.add_argument("--engine", default="local", metavar="NAME",
                   help="where runs execute: local (this machine; default) or ray (pip install -e .[ray])")  # fmt: skip
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="runs at once: local processes (default 1: in this process) or the CPUs of a local Ray "
                        "(default: all); at most this machine's CPUs and the pending runs (more is capped)")
    r.add_argument("--address", default=None, metavar="ADDR",
                   help="with --engine ray: join this Ray cluster (e.g. ray://head:10001) instead of a local Ray")
    r.add_argument("--limit", type=int, default=None, metavar="N",
                   help="execute at most N of the pending runs now (0: only rebuild the report)")
    r.add_argument("--quiet", action="store_true", help="no progress output, only warnings and the final summary")
    r.add_argument("--force", action="store_true",
                   help="run into an --out folder that holds another experiment (its rows stay beside the new ones)")
    r.add_argument("--junit-xml", type=Path, default=None, dest="junit_xml", metavar="FILE",
                   help="also write the [[expect]] rows as JUnit XML (one test case per row) for a CI test report; "
                        "inside GitHub Actions the step summary and ::error annotations come too")


def _diff(sub: Any) -> None:
    """`he-leak diff`: the regression gate between two results folders."""
    d = sub.add_parser(
        "diff", help="compare two results folders cell by cell; exit 1 when an attacker recovers more",
        description="Match the cells (configuration × attacker) of two results folders and compare each one's mean "
        "per-sample gain over the prior by a bootstrap interval of the difference (paired by sample when both hold "
        "the same samples; 95% over all cells, Bonferroni). Exit 1 when a cell got more leaky beyond noise and "
        "the tolerance, 0 otherwise, 2 on bad input.",
    )  # fmt: skip
    d.add_argument("base", type=Path, metavar="BASE_DIR", help="the reference results folder (or its results.jsonl)")
    d.add_argument("new", type=Path, metavar="NEW_DIR", help="the results folder to check against it")
    d.add_argument("--tolerance-db", type=float, default=None, dest="tolerance_db", metavar="X",
                   help="a cell is more leaky only when the whole interval of its change in mean gain lies above X "
                        "dB (default: the verdicts' margin, 1 dB)")  # fmt: skip
    d.add_argument("--junit-xml", type=Path, default=None, dest="junit_xml", metavar="FILE",
                   help="also write one JUnit test case per cell (a failure for each cell more leaky)")


def _inspect(sub: Any) -> None:
    """`he-leak status` and `he-leak table`: results folders read, nothing run."""
    t = sub.add_parser("status", help="summarise a results folder without running anything")
    t.add_argument("out", type=Path, metavar="DIR", help="the --out folder of `he-leak run`")

    g = sub.add_parser("table", help="print the protection table (markdown) of recorded results",
                       description="The verdict per (protection, attacker) with its legend, as report.md and the "
                       "README show it, from recorded results (nothing runs).")  # fmt: skip
    g.add_argument("results", type=Path, metavar="RESULTS", help="a results.jsonl, or the --out folder holding one")
    g.add_argument("--view", default="protection", choices=("protection", "frontier", "key-recovery"),
                   help="which table: the verdicts (default), the privacy–utility–cost frontier, or he-train's key "
                        "recovery from shared decryptions")  # fmt: skip


def _audit(sub: Any) -> None:
    """`he-leak audit`: the rank analysis of a model."""
    d = sub.add_parser("audit", help="per-layer rank analysis: can the input be reconstructed exactly?")
    _model_args(d)
    d.add_argument("--json", action="store_true", help="print one JSON object")


def _bench(sub: Any) -> None:
    """`he-leak bench`: the bench's own options (he_leak.bench.options)."""
    from he_leak.bench.options import add_arguments

    b = sub.add_parser("bench", help="original DLG loop versus the project's attacks, each with its own stop")
    add_arguments(b)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one function per subcommand."""
    from he_leak import __version__

    parser = OneLineParser(prog="he-leak",
                           description="Gradient inversion against homomorphically encrypted training data.")
    parser.add_argument("--version", action="version", version=f"he-leak {__version__}",
                        help="print the he-leak version and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for add in (_attack, _run, _diff, _inspect, _audit, _bench):
        add(sub)
    sub.add_parser("list", help="list the registered scenarios, encryptors, attacks, models and datasets")
    return parser
