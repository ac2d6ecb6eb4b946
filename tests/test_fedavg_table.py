"""experiments/fedavg_table.py (the README's FedAvg table) on hand-made rows: counts, the Clopper–Pearson interval,
the pairing of the unrolled and single-gradient attacks by sample, and failures."""

import pytest
from scipy.stats import binomtest
from stubs import experiment_script


def _table_module():
    return experiment_script("fedavg_table")


def _row(index, *, unroll, psnr, steps=5, batch=1, recovered=None, scenario="plain", role=None, prior=10.0):
    psnrs = None if psnr is None else [psnr] * batch
    return {"visible_fraction": 0.0 if role == "server" else 1.0,
        "scenario": scenario, "model": "mlp", "data": "digits", "attack": "dlg", "batch": batch, "index": index,
        "recovered": (batch if psnr is not None and psnr >= 30 else 0) if recovered is None else recovered,
        "sample_psnrs": None if psnrs is None else {"keyless": psnrs, "prior": [prior] * batch},
        "config": {"data": "digits", "index": index, "seed": index, "local_steps": steps, "local_batch": 1,
                   "unroll": unroll, "iterations": None, "role": role, "clients": 2},
    }  # fmt: skip


def _line(text, needle):
    return next(line for line in text.splitlines() if needle in line)


def test_counts_intervals_and_the_paired_difference():
    t = _table_module()
    rows = [_row(i, unroll=True, psnr=40.0 + i) for i in range(20)]
    # the single-gradient attack's prior differs (it follows that attack's own labels): the column is a PSNR difference
    rows += [_row(i, unroll=False, psnr=20.0 if i else 35.0, prior=13.0) for i in range(20)]
    line = _line(t.table(rows), "| 5 |")
    low, high = binomtest(20, 20).proportion_ci(method="exact")
    assert f"20 / 20 [{low:.2f}, {high:.2f}]" in line and "| 1 / 20 [" in line
    # unrolling gains (40 + i) − 20 for i = 1..19 and 40 − 35 for i = 0: (570 + 5) / 20 = +28.75 dB over 20 pairs
    assert "+28.8 [" in line and "(n = 20)" in line
    assert "dlg ≤ 300" in line  # the attack's default budget when the grid leaves it out


def test_a_failed_run_is_not_recovered_and_leaves_the_pairing():
    t = _table_module()
    rows = [_row(i, unroll=True, psnr=None if i == 0 else 50.0) for i in range(4)]
    rows += [_row(i, unroll=False, psnr=20.0) for i in range(4)]
    line = _line(t.table(rows), "| 5 |")
    assert "| 3 / 4 [" in line and "+30.0 [+30.0, +30.0] (n = 3)" in line


def test_one_gradient_has_no_single_gradient_column_and_a_blind_server_no_psnr():
    t = _table_module()
    rows = [_row(i, unroll=True, psnr=60.0, steps=1) for i in range(3)]
    rows += [_row(i, unroll=True, psnr=None, scenario="he-aggregate", role="server") for i in range(3)]
    text = t.table(rows)
    assert _line(text, "plain").endswith("| 3 / 3 [0.29, 1.00] | 60.0 | — | — | — |")
    assert _line(text, "the server").endswith("| nothing in the clear (3 runs) | — | — | — | — |")
    assert "he-aggregate, K = 2: the server" in text


@pytest.mark.parametrize("steps", [2, 10])
def test_the_local_steps_and_budget_are_their_own_cells(steps):
    t = _table_module()
    rows = [_row(0, unroll=True, psnr=50.0, steps=steps), _row(0, unroll=True, psnr=50.0, steps=1)]
    rows[0]["config"]["iterations"] = 50
    rows.append(_row(1, unroll=True, psnr=50.0, steps=steps) | {"attack": "ig", "label_orders": 2})
    text = t.table(rows)
    assert len(text.splitlines()) == 5 and "dlg ≤ 50" in text and "dlg ≤ 300" in text
    assert "ig ≤ 2000 per label order (up to 2)" in text


def test_batchnorm_table_pairs_each_prior_weight_with_no_prior_on_the_same_images():
    t = experiment_script("batchnorm_table")

    def row(index, weight, psnr):
        return {"model": "lenet-bn", "data": "digits", "batch": 1, "index": index, "recovered": int(psnr >= 30),
                "sample_psnrs": {"keyless": [psnr], "prior": [12.0]},
                "config": {"data": "digits", "index": index, "seed": 0, "bn_prior": weight}}  # fmt: skip

    rows = [row(i, 0.0, 20.0 + i) for i in range(4)] + [row(i, 0.1, 31.0 + i) for i in range(4)]
    text = t.table(rows)
    base = _line(text, "| 0 |")
    assert "| 0 / 4 [0.00, 0.60] | 21.5 | +9.5 [" in base and base.endswith("| — |")
    assert "| 4 / 4 [0.40, 1.00] | 32.5 | +20.5 [" in text and "| +11.0 [+11.0, +11.0] |" in text
