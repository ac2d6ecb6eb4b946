"""The frontier and key-recovery reports (he_leak.report.frontier, he_leak.report.keys): one row per (protection,
attacker) with gain, utility, cost and ε read from the rows; protection names for DP-SGD, secagg and he-train's
sharing and flooding; the key-recovery attacker judged by what it decrypted; `he-leak table --view`."""

from __future__ import annotations

import json

import pytest

from he_leak.cli import main
from he_leak.config import RunConfig
from he_leak.records import Result
from he_leak.report import frontier, keys, protection
from he_leak.report.protection import FAILED, NOT_STOPS, STOPS


def row(scenario: str, index: int, *, keyless=None, key=None, prior=12.0, recovered=0, utility=None,
        dp_epsilon=None, he_seconds=None, attack_on_key=None, **config) -> dict:  # fmt: skip
    """A result row as a run writes it; ``attack_on_key``: its Result.key_recovery (the config's --key-recovery is
    in ``config``)."""
    cfg = RunConfig(scenario=scenario, attack="analytic", index=index, seed=index, **config)
    samples = {"prior": [prior]}
    if keyless is not None:
        samples["keyless"] = [keyless]
    if key is not None:
        samples["key holder"] = [key]
    out = Result(scenario, None, "mlp", "analytic", "digits", index, index, 1, "cpu", config=cfg.key()).to_dict()
    out.update(sample_psnrs=samples, recovered=recovered, key_holder_recovered=None if key is None else int(key >= 30),
               utility=utility, utility_plain=0.8, dp_epsilon=dp_epsilon, he_seconds=he_seconds, he_bytes=1e6,
               key_recovery=attack_on_key, prior_psnr=prior)  # fmt: skip
    return out


def outcome(recovered: bool, *, flood: int | None = None) -> dict:
    return {"disclosure": "slots", "recovered": recovered, "key_correct": recovered, "seconds": 1.5,
            "equations": 8192, "unknowns": 8192, "reencoding_error": 0.0 if recovered else 2.0 ** (flood or 7),
            **({"inputs_max_error": 3e-6} if recovered else {})}  # fmt: skip


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    plain = [row("plain", i, keyless=150.0, recovered=1, utility=0.8) for i in range(25)]
    dp = [row("plain", i, keyless=8.0 + 0.1 * (i % 3), dp_noise=1.0, utility=0.1, dp_epsilon=3.6) for i in range(25)]
    he = []
    keyed = dict(he_seconds=8.0, key_recovery=True, disclosure="slots", model="mlp", activation="square")
    for i in range(25):
        he.append(row("he-train", i, keyless=140.0, recovered=1, key=150.0, utility=0.9, attack_on_key=outcome(True),
                      **keyed))  # fmt: skip
        he.append(row("he-train", i, keyless=10.0, utility=0.89, attack_on_key=outcome(False, flood=30), flood_bits=30,
                      **keyed))  # fmt: skip
    return plain + dp + he


def test_frontier_rows_read_gain_utility_cost_and_epsilon(rows, tmp_path) -> None:
    cells = {(c.protection, c.attacker): c for c in protection.summarise(rows)}
    dp = cells[("plain · DP-SGD z=1 C=1", "sees the gradient")]
    assert dp.verdict == STOPS and dp.epsilon == pytest.approx(3.6) and dp.utility == pytest.approx(0.1)
    key = cells[("he-train · mlp square, mse · shares slots", protection.KEY_RECOVERY)]
    assert key.verdict == NOT_STOPS and key.best.k == 25
    flooded = cells[("he-train · mlp square, mse · shares slots · flood 2^30", protection.KEY_RECOVERY)]
    assert flooded.verdict == FAILED and flooded.he_seconds == pytest.approx(8.0)
    lines = frontier.table(list(cells.values()))
    assert len(lines) == 2 + len(cells) and "| 3.6 |" in "\n".join(lines)
    assert frontier.figure(list(cells.values()), tmp_path / "f.png").stat().st_size > 10_000


def test_key_recovery_table_counts_each_setting(rows) -> None:
    text = "\n".join(keys.table(rows))
    assert "| 0 | mlp | slots | none (exact) | 25 | 25/25 (0.86–1.00) | 25/25 |" in text
    assert "| 0 | mlp | slots | 2^30 | 25 | 0/25 (0.00–0.14) | 0/25 |" in text
    assert keys.table([r for r in rows if r["scenario"] == "plain"]) == []


def test_table_views_on_the_command_line(rows, tmp_path, capsys) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for view, marker in (("frontier", "ε (δ = 1e-5)"), ("key-recovery", "key accepted"), ("protection", "verdict")):
        assert main(["table", str(path), "--view", view]) == 0
        assert marker in capsys.readouterr().out
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows if r["scenario"] == "plain"))
    assert main(["table", str(plain), "--view", "key-recovery"]) == 2
    assert "no he-train run with --key-recovery" in capsys.readouterr().err


def test_protection_names() -> None:
    def name(**config):
        return protection.protection({"scenario": config.pop("scenario", "plain"), "config": config})

    assert name(dp_noise=0.3, dp_clip=1.0) == "plain · DP-SGD z=0.3 C=1"
    assert name(scenario="secagg", clients=4) == "secagg · K=4"
    assert name(scenario="he-train", model="mlp", activation="square", key_recovery=True, disclosure="real",
                flood_bits=20) == "he-train · mlp square, mse · shares real · flood 2^20"  # fmt: skip
    assert name(scenario="he-train", model="logreg", key_recovery=True) == "he-train · logreg, mse · shares entries"
    assert protection.attackers({"scenario": "secagg", "config": {}}) == {
        "server (sees the sum)": ("keyless", "recovered")}  # fmt: skip


def test_report_shows_the_frontier_and_the_key_recovery(rows, tmp_path) -> None:
    from he_leak.report.markdown import write_report

    cells = protection.summarise(rows)
    figure = frontier.figure(cells, tmp_path / "figures" / "frontier.png")
    text = write_report(rows, tmp_path, title="t", frontier_figure=figure.relative_to(tmp_path)).read_text()
    assert "## Privacy–utility–cost frontier" in text and "![frontier](figures/frontier.png)" in text
    assert "## Key recovery from shared decryptions" in text and "25/25 (0.86–1.00)" in text
    assert text.index("## Privacy–utility–cost frontier") < text.index("## Key recovery from shared decryptions")
    plain = write_report([r for r in rows if r["scenario"] == "plain"], tmp_path / "plain.md", title="t").read_text()
    assert "## Key recovery" not in plain and "## Privacy–utility–cost frontier" not in plain
