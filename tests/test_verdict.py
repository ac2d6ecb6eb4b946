"""Verdicts per (protection, attacker) from per-sample data (he_leak.report.protection, he_leak.report.stats): each
attacker counted by what it holds, a failed attack never reads as a stop, the Clopper–Pearson and bootstrap rules on
constructed data, and the per-sample fields a real run records."""

from __future__ import annotations

import math

import pytest

from he_leak.config import RunConfig
from he_leak.records import Result
from he_leak.report import protection
from he_leak.report.protection import FAILED, INCONCLUSIVE, NOT_STOPS, NOTHING, STOPS
from he_leak.report.stats import CONFIDENCE, mean_interval, recovery_interval
from he_leak.runner import run_one


def row(scenario: str, attack: str, index: int, *, keyless=None, key=None, prior=12.0, recovered=None,
        keyless_recovered=None, error=None, visible=1.0, **config) -> dict:  # fmt: skip
    """A result row with per-sample PSNRs (lists, one per sample) as scoring writes them."""
    cfg = RunConfig(scenario=scenario, attack=attack, index=index, seed=index, **config)
    samples = {"prior": [prior] * len(keyless or key or [0])}
    if keyless is not None:
        samples["keyless"] = list(keyless)
    if key is not None:
        samples["key holder"] = list(key)
    out = Result(scenario, "ckks" if scenario == "ckks-input" else None, "mlp", attack, "digits", index, index, 1,
                 "cpu", config=cfg.key()).to_dict()  # fmt: skip
    out.update(sample_psnrs=samples, recovered=recovered, keyless_recovered=keyless_recovered, error=error,
               visible_fraction=visible, prior_psnr=prior)  # fmt: skip
    return out


def plain_rows(gains: list[float], attack: str = "dlg", success: float = 30.0, **config) -> list[dict]:
    """One batch-1 run per gain (PSNR = prior + gain), recovered when the PSNR reaches `success`."""
    return [row("plain", attack, i, keyless=[12.0 + g], recovered=int(12.0 + g >= success), **config)
            for i, g in enumerate(gains)]  # fmt: skip


def cell_of(rows: list[dict], attacker: str = "sees the gradient") -> protection.Cell:
    (cell,) = [c for c in protection.summarise(rows) if c.attacker == attacker]
    return cell


# --------------------------------------------------------------------------------------------------------- scipy
def test_clopper_pearson_matches_its_closed_form_at_the_ends():
    """k = 0: the exact upper bound solves (1 - p)^n = alpha/2; k = n: the lower bound solves p^n = alpha/2."""
    alpha = 1 - CONFIDENCE
    for n in (3, 20, 24, 100):
        low, high = recovery_interval(0, n)
        assert low == 0.0 and high == pytest.approx(1 - (alpha / 2) ** (1 / n), rel=1e-9)
        low, high = recovery_interval(n, n)
        assert high == 1.0 and low == pytest.approx((alpha / 2) ** (1 / n), rel=1e-9)
    assert recovery_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_is_reproducible_and_order_free():
    values = [0.1, -0.4, 0.3, 0.25, -0.05, 0.6, 0.0, 0.2, -0.3, 0.15]
    first = mean_interval(values)
    assert first == mean_interval(list(reversed(values)))  # fixed seed, sorted data: the same interval
    low, high = first
    assert low < sum(values) / len(values) < high
    assert mean_interval([0.5]) is None and mean_interval([0.2, 0.2, 0.2]) == (0.2, 0.2)


# --------------------------------------------------------------------------------------------------------- verdicts
def test_stops_needs_enough_samples_none_recovered_and_a_gain_interval_within_the_margin():
    gains = [0.3, -0.2, 0.1, 0.4, -0.1, 0.0] * 4  # 24 samples around +0.08 dB
    cell = cell_of(plain_rows(gains))
    assert cell.verdict == STOPS and cell.best.k == 0 and cell.best.n == 24
    assert cell.best.rate_ci[1] < protection.RECOVERY_LEVEL and cell.best.gain_ci[1] <= protection.STOP_MARGIN_DB
    few = cell_of(plain_rows(gains[:6]))  # the same gains on 6 samples: the rate bound cannot reach the level
    assert few.verdict == INCONCLUSIVE and "too few samples" in few.reason


def test_one_of_three_fully_recovered_is_not_stopped_though_the_median_is_within_one_db():
    cell = cell_of(plain_rows([0.2, -0.3, 188.0]))
    assert statistics_median([0.2, -0.3, 188.0]) <= 1.0  # the old rule (median within 1 dB) would say "stops"
    assert cell.verdict == NOT_STOPS and "1/3 samples recovered" in cell.reason
    assert cell.best.psnr_worst == pytest.approx(200.0)  # the worst case is reported beside the median


def test_a_gain_interval_above_or_straddling_the_margin():
    above = cell_of(plain_rows([5.0, 6.0, 4.5, 5.5, 7.0, 4.0] * 4))  # partial leakage, nothing reaches 30 dB
    assert above.verdict == NOT_STOPS and above.best.k == 0 and above.best.gain_ci[0] > 1.0
    straddles = cell_of(plain_rows([0.0, 0.5, 1.0, 1.5, 2.0, -0.5] * 4))
    assert straddles.verdict == INCONCLUSIVE and "straddles" in straddles.reason
    worse = cell_of(plain_rows([-6.0, -5.0, -7.5, -4.0, -6.5, -5.5] * 4))  # worse than the prior: no gain
    assert worse.verdict == STOPS


def test_a_failed_attack_is_not_a_stop_and_nothing_visible_is_said_so():
    failed = [row("plain", "dlg", i, error="AttackFailed: diverged") for i in range(24)]
    for r in failed:
        r["sample_psnrs"] = {"prior": [12.0]}
    cell = cell_of(failed)
    assert cell.verdict == FAILED and "keeps its prior" in cell.reason and "diverged" in cell.reason
    assert cell.best is None
    hidden = [{**r, "scenario": "he-aggregate", "visible_fraction": 0.0,
               "config": RunConfig(scenario="he-aggregate", attack="dlg", index=i).key()}
              for i, r in enumerate(failed)]  # fmt: skip
    assert cell_of(hidden, "server").verdict == NOTHING
    # failed runs are not samples at the prior: 3 runs with estimates and 21 failures are 3 samples
    mixed = plain_rows([0.1, 0.0, -0.1]) + failed[3:]
    partial = cell_of(mixed)
    assert partial.best.n == 3 and partial.best.failed == 21 and partial.verdict == INCONCLUSIVE


def test_each_ckks_attacker_is_counted_by_what_it_holds():
    rows = [row("ckks-input", a, i, keyless=[12.2], key=[112.0], recovered=1, keyless_recovered=0)
            for a in ("analytic", "dlg") for i in range(24)]  # fmt: skip
    keyless, holder = cell_of(rows, "keyless"), cell_of(rows, "key holder")
    assert (keyless.best.k, keyless.best.n, keyless.verdict) == (0, 24, STOPS)
    assert (holder.best.k, holder.best.n, holder.verdict) == (24, 24, NOT_STOPS)
    table = "\n".join(protection.table([keyless, holder, cell_of(plain_rows([150.0] * 3))]))
    assert "| ckks-input · ckks | keyless | stops | " in table and "| 0/24 (0.00–0.14) |" in table
    assert "| ckks-input · ckks | key holder | does not stop | " in table and "| 24/24 (0.86–1.00) |" in table


def test_best_attack_recovers_most_then_gains_most():
    rows = plain_rows([0.5] * 24, attack="idlg") + plain_rows([3.0] * 23 + [40.0], attack="dlg")
    rows += plain_rows([6.0] * 24, attack="ig")
    cell = cell_of(rows)
    assert [a.attack for a in cell.attacks] == ["dlg", "ig", "idlg"]  # 1/24 recovered beats a higher mean gain
    assert cell.verdict == NOT_STOPS and "dlg" in protection.sentence(cell)


def test_verdict_lines_never_mix_roles():
    rows = [row("he-aggregate", "analytic", i, keyless=[150.0, 140.0], recovered=2, role="client", clients=2)
            for i in range(12)]  # fmt: skip
    rows += [row("he-aggregate", "analytic", i, error="AttackFailed: nothing visible", visible=0.0, clients=2)
             for i in range(12)]  # fmt: skip
    lines = protection.summarise(rows)
    assert [(c.attacker, c.verdict) for c in lines] == [("client", NOT_STOPS), ("server", NOTHING)]
    client, server = (protection.sentence(c) for c in lines)
    assert "150.0" not in server and "24/24 recovered" in client and "nothing to attack" in server
    assert "Attacks: analytic produced no estimate in 12 runs (AttackFailed: nothing visible)" in server


def statistics_median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] +
                                                                ordered[len(ordered) // 2]) / 2  # fmt: skip


# --------------------------------------------------------------------------------------------------------- runs
def test_runs_record_per_sample_psnrs_per_attacker_and_what_is_visible():
    ckks = run_one(RunConfig(scenario="ckks-input", encryptor="ckks", attack="analytic", model="mlp", hidden=(8,)))
    assert set(ckks.sample_psnrs) == {"keyless", "key holder", "prior"}
    assert ckks.sample_psnrs["key holder"][0] == pytest.approx(ckks.key_plaintext_psnr)
    assert ckks.sample_psnrs["keyless"][0] - ckks.sample_psnrs["prior"][0] == pytest.approx(ckks.keyless_gain)
    assert (ckks.recovered, ckks.keyless_recovered, ckks.visible_fraction) == (1, 0, 1.0)
    client = run_one(RunConfig(scenario="he-aggregate", role="client", clients=2, attack="analytic", model="mlp",
                               hidden=(32,)))  # fmt: skip
    assert len(client.sample_psnrs["keyless"]) == 2 and client.keyless_recovered == client.recovered == 2
    assert math.fsum(client.sample_psnrs["keyless"]) / 2 == pytest.approx(client.plaintext_psnr)
    server = run_one(RunConfig(scenario="he-aggregate", attack="idlg", model="mlp", hidden=(8,)))
    assert server.error and server.visible_fraction == 0.0 and set(server.sample_psnrs) == {"prior"}
    assert server.recovered is None and server.keyless_recovered is None  # a failed attack is not scored


# --------------------------------------------------------------------------------------------------------- grids
@pytest.mark.parametrize(("name", "least"), [("he_protection.toml", 20), ("he_protection_full.toml", 100)])
def test_every_headline_cell_has_enough_distinct_images_and_seeds(name, least):
    from pathlib import Path

    from he_leak.sweep.experiment import load_experiment

    experiment = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / name, check_names=False)
    cells: dict[tuple[str, str, str], list[RunConfig]] = {}
    for cfg in experiment.runs:
        key = {"scenario": cfg.scenario, "encryptor": cfg.encryptor, "config": cfg.key()}
        for who in protection.attackers(key):
            cells.setdefault((protection.protection(key), who, cfg.attack), []).append(cfg)
    assert len(cells) >= 40
    for where, runs in cells.items():  # a key-holding client attacks all K clients' samples, the server client 0's
        per_run = [cfg.batch * (cfg.clients if cfg.role == "client" else 1) for cfg in runs]
        images = {cfg.index + i for cfg, k in zip(runs, per_run, strict=True) for i in range(k)}
        assert len(images) == sum(per_run) >= least, where  # distinct: no image counted twice
        assert len({cfg.seed for cfg in runs}) >= least, where  # the attack's randomness varies too


def test_utility_is_per_protection_and_labelled_by_how_it_was_measured():
    rows = [row("he-aggregate", "analytic", i, keyless=[150.0], recovered=1, role="client") for i in range(3)]
    rows += [row("he-aggregate", "analytic", 9, error="AttackFailed: nothing visible", visible=0.0)]
    rows[-1].update(utility=0.8, utility_plain=0.82, utility_measured="encrypted SGD")  # only the server's run has it
    client, server = protection.summarise(rows)
    for cell in (client, server):  # what a protection costs does not depend on who attacks it
        assert protection.row_cells(cell)[8] == "0.800 (plain 0.820), encrypted SGD"
    del rows[-1]["utility_measured"]
    assert protection.row_cells(protection.summarise(rows)[0])[8] == "0.800 (plain 0.820)"


def test_local_training_names_the_protection_and_single_gradient_attacks_are_their_own_line():
    local = dict(batch=2, local_steps=2, local_lr=0.1, local_batch=1)
    rows = plain_rows([30.0] * 20, **local) + plain_rows([1.0] * 20, **local, unroll=False)
    rows += plain_rows([2.0] * 20, attack="ig", model="lenet-bn", model_mode="train", bn_prior=0.1)
    cells = {c.protection: c for c in protection.summarise(rows) if c.attacker == "sees the gradient"}
    assert set(cells) == {"plain · lenet · digits · E=2 η=0.1 b=1", "plain · lenet-bn · digits · train mode"}
    fedavg = cells["plain · lenet · digits · E=2 η=0.1 b=1"]
    assert [a.attack for a in fedavg.attacks] == ["dlg", "dlg (single gradient)"]
    assert [a.attack for a in cells["plain · lenet-bn · digits · train mode"].attacks] == ["ig + BN prior 0.1"]


@pytest.mark.parametrize("name", ["fedavg.toml", "fedavg_budget.toml", "batchnorm.toml", "training_stage.toml"])
def test_issue_18_cells_hold_twenty_distinct_images_each_run_its_own_seed(name):
    from pathlib import Path

    from he_leak.sweep.experiment import load_experiment

    experiment = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / name, check_names=False)
    cells: dict[tuple[str, str], list[RunConfig]] = {}
    for cfg in experiment.runs:
        key = {"scenario": cfg.scenario, "attack": cfg.attack, "config": cfg.key()}
        where = (protection.protection(key), tuple(protection.attackers(key)), protection.attack_label(key))
        cells.setdefault(where, []).append(cfg)

    from he_leak.scenarios import SCENARIOS

    def samples(cfg: RunConfig) -> int:  # he-aggregate: each of K clients draws its own batch, in index order
        return cfg.batch * (cfg.clients if SCENARIOS[cfg.scenario].per_client else 1)

    for where, runs in cells.items():
        images = {(cfg.data, cfg.index + i) for cfg in runs for i in range(samples(cfg))}
        assert len(images) == sum(samples(cfg) for cfg in runs) >= 20, where
        assert len({cfg.seed for cfg in runs}) == len(runs), where


def test_he_aggregate_labels_name_batch_backend_imprint_and_the_colluder():
    def row(**cfg):
        return {"scenario": "he-aggregate", "config": RunConfig(scenario="he-aggregate", **cfg).key()}

    assert protection.protection(row(clients=4)) == "he-aggregate · K=4 · all encrypted"
    label = protection.protection(row(clients=8, batch=2, he_backend="openfhe-threshold", imprint=64))
    assert label == "he-aggregate · K=8 · B=2 · openfhe-threshold · imprint 64 bins · all encrypted"
    assert list(protection.attackers(row(role="colluder"))) == ["colluder"]
