"""Readable output: one run as a table (the CLI), an experiment as report.md with tables, a verdict computed from
the numbers, and the expectations."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from he_leak.records import RESULT_KEYS
from he_leak.report import frontier, keys, protection
from he_leak.text import encryptor_name, finite, fixed, median_of

DEFAULT_SYMBOL_EXACT = 0.999
GROUP_KEYS = ("scenario", "encryptor", "attack")
REPLICATE_KEYS = ("scenario", "encryptor", "attack", "index", "seed", "device", "iterations")

Row = Mapping[str, Any]
SECONDS = {"seconds": "attack only", "run_seconds": "whole run", "he_seconds": "HE work per round"}  # what is timed


# --------------------------------------------------------------------------------------------------------- one run
def result_table(row: Row, *, title: str | None = None) -> Any:
    """A rich Table of one Result dict: the set fields of DESIGN.md's keys, then the extras (config left out)."""
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    keys = [*RESULT_KEYS, *(k for k in row if k not in RESULT_KEYS and k != "config")]
    for key in keys:
        value = row.get(key)
        if value is None and key not in ("success", "error"):
            continue
        if key == "error" and value is None:
            continue
        table.add_row(key, _value(key, value))
    return table


def format_result(row: Row, *, width: int = 100) -> str:
    """The single-run table as plain text (no colour codes), for the CLI or a log."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(result_table(row))
    return buffer.getvalue()


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if key.endswith("psnr"):
            return f"{value:.2f} dB"
        if key == "keyless_gain":
            return f"{fixed(value, 2, sign=True)} dB"
        if key in SECONDS:
            return f"{value:.2f} s ({SECONDS[key]})"
        if key.endswith("mse"):
            return f"{value:.3e}"
        return fixed(value, 4)  # never -0.0000
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


# --------------------------------------------------------------------------------------------------------- statistics
def _median(rows: Sequence[Row], key: str) -> float | None:
    return median_of(r.get(key) for r in rows)


def _count(rows: Sequence[Row], key: str) -> tuple[int, int]:
    """(how many rows have `key` true, how many have it at all)."""
    present = [r.get(key) for r in rows if r.get(key) is not None]
    return sum(1 for v in present if v is True or (not isinstance(v, bool) and v)), len(present)


def _failures(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("error")]


def _symbol_threshold(row: Row) -> float:
    value = (row.get("config") or {}).get("success_symbol_exact")
    return float(value) if isinstance(value, int | float) else DEFAULT_SYMBOL_EXACT


def _rate(hits: int, n: int) -> str:
    return "—" if n == 0 else f"{hits}/{n} ({100 * hits / n:.0f}%)"


def _groups(rows: Sequence[Row], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Row]]:
    out: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        key = tuple(encryptor_name(row.get(k)) if k == "encryptor" else row.get(k) for k in keys)
        out.setdefault(key, []).append(row)
    return out


def _variant_keys(rows: Sequence[Row]) -> list[str]:
    """Config fields other than replicates (index, seed) and the grouping ones that take several values: they get
    their own column, so that e.g. batch 1 and batch 8 are not pooled."""
    configs = [r.get("config") or {} for r in rows]
    names: list[str] = []
    for config in configs:
        names.extend(k for k in config if k not in names)
    return [
        k for k in names
        if k not in REPLICATE_KEYS and len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1
    ]  # fmt: skip


def _variant(row: Row, keys: Sequence[str]) -> tuple[str, ...]:
    config = row.get("config") or {}
    return tuple(json.dumps(config.get(k)) if isinstance(config.get(k), list | dict) else str(config.get(k))
                 for k in keys)  # fmt: skip


# --------------------------------------------------------------------------------------------------------- tables
TABLE_COLUMNS = (
    "runs", "success", "plaintext PSNR (dB)", "prior PSNR (dB)", "plaintext SSIM", "input PSNR (dB)", "symbol exact",
    "decrypts", "key PSNR (dB)", "utility", "attack s", "run s", "failures",
)  # fmt: skip


def _table_cells(rows: Sequence[Row]) -> list[str]:
    success = sum(1 for r in rows if r.get("success") is True)
    return [
        str(len(rows)),
        _rate(success, len(rows)),
        fixed(_median(rows, "plaintext_psnr"), 2),
        fixed(_median(rows, "prior_psnr"), 2),
        fixed(_median(rows, "plaintext_ssim"), 3),
        fixed(_median(rows, "input_psnr"), 2),
        fixed(_median(rows, "symbol_exact"), 4),
        _rate(*_count(rows, "decrypts")),
        fixed(_median(rows, "key_plaintext_psnr"), 2),
        fixed(_median(rows, "utility"), 3),
        fixed(_median(rows, "seconds"), 2),
        fixed(_median(rows, "run_seconds"), 2),
        str(len(_failures(rows))),
    ]


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in body)]


def results_tables(rows: Sequence[Row]) -> list[str]:
    """Markdown: one table per scenario × encryptor, one line per attack (× varying config fields)."""
    lines: list[str] = []
    variants = _variant_keys(rows)
    for (scenario, encryptor), group in _groups(rows, ("scenario", "encryptor")).items():
        lines += [f"### {scenario} · encryptor {encryptor}", ""]
        body = []
        for (attack, *variant), sub in _groups_variant(group, variants).items():
            body.append([str(attack), *variant, *_table_cells(sub)])
        lines += _markdown_table(["attack", *variants, *TABLE_COLUMNS], body)
        lines.append("")
    if lines:
        lines += ["Medians over each line's runs; attack s: the attack alone (`seconds`), run s: the whole run "
                  "(`run_seconds`: data, model, encryption and HE work, attack, scoring, utility).", ""]  # fmt: skip
    return lines


def _groups_variant(rows: Sequence[Row], variants: Sequence[str]) -> dict[tuple[Any, ...], list[Row]]:
    out: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        out.setdefault((row.get("attack"), *_variant(row, variants)), []).append(row)
    return out


# --------------------------------------------------------------------------------------------------------- verdict
def verdict(rows: Sequence[Row], cells: Sequence[protection.Cell] | None = None) -> list[str]:
    """One line per (protection, attacker) (he_leak.report.protection), never mixing roles: its verdict and the figures
    behind it, what its runs show about the model input (the ciphertext view), what a key holder decrypts, and the
    runs that ended with an error. All computed from the rows (nothing hand-written per experiment)."""
    lines: list[str] = []
    for cell in protection.summarise(rows) if cells is None else cells:
        by_attack = _groups(cell.rows, ("attack",))
        extra = _input_sentence(by_attack)
        if cell.attacker == "key holder":
            extra += _key_sentence(by_attack)
        failed = _failures(cell.rows)
        if failed:
            extra.append(f"{len(failed)} of {len(cell.rows)} runs ended with an error (first: {failed[0]['error']}).")
        lines.append(" ".join([protection.sentence(cell), *extra]))
    return lines


def _input_sentence(by_attack: Mapping[tuple[Any, ...], list[Row]]) -> list[str]:
    scored = [(a, rows, _median(rows, "symbol_exact")) for (a,), rows in by_attack.items()]
    scored = [s for s in scored if s[2] is not None]
    if not scored:
        return []
    attack, rows, best = max(scored, key=lambda s: s[2])
    values = [(r["symbol_exact"], _symbol_threshold(r)) for r in rows if finite(r.get("symbol_exact"))]
    exact = sum(1 for v, t in values if v >= t)
    threshold = _symbol_threshold(rows[0])
    state = "is recovered" if exact == len(values) else ("is partly recovered" if exact else "is not recovered")
    return [f"The model input (ciphertext view) {state}: best median symbol_exact {best:.4f} ({attack}), "
            f"≥ {threshold:g} in {exact} of {len(values)} runs."]  # fmt: skip


def _key_sentence(by_attack: Mapping[tuple[Any, ...], list[Row]]) -> list[str]:
    scored = []
    for (attack,), rows in by_attack.items():
        hits, n = _count(rows, "decrypts")
        psnr = _median(rows, "key_plaintext_psnr")
        if n or psnr is not None:
            scored.append((hits / n if n else -1.0, psnr if psnr is not None else -math.inf, attack, rows, hits, n))
    if not scored:
        return []
    _, psnr, attack, rows, hits, n = max(scored, key=lambda s: (s[0], s[1]))
    ssim = _median(rows, "key_plaintext_ssim")
    quality = ""
    if math.isfinite(psnr):
        quality = f"; the decrypted images have median PSNR {psnr:.1f} dB" + (
            f" (SSIM {ssim:.3f})" if ssim is not None else ""
        )
    if n:
        readable = "can read it" if hits == n else ("can read it in some runs" if hits else "cannot read it")
        return [f"A key holder {readable}: the recovered input decrypts in {hits} of {n} runs ({attack}){quality}."]
    return [f"With the key ({attack}){quality}."]


# --------------------------------------------------------------------------------------------------------- report.md
def expectations_table(expectations: Sequence[Mapping[str, Any]]) -> list[str]:
    body = []
    for e in expectations:
        status = {True: "met", False: "**unmet**", None: "pending"}[e.get("met")]
        value = e.get("value")
        body.append([str(e.get("expect", "")), "—" if value is None else f"{value:.4g}", str(e.get("runs", "")),
                     status, str(e.get("note") or "")])  # fmt: skip
    return _markdown_table(["expectation", "value", "runs", "status", "note"], body)


def answer(rows: Sequence[Row], cells: Sequence[protection.Cell], *, headline: Path | str | None,
           frontier_figure: Path | str | None) -> list[str]:  # fmt: skip
    """The report's first screen: the protection table with its legend and figure, the privacy–utility–cost frontier
    (when its figure was drawn: he_leak.report.frontier) and the key-recovery table (he_leak.report.keys)."""
    lines: list[str] = []
    if matrix := protection.table(cells):
        lines += ["## Which protection stops which attacker", "", *matrix, "", protection.legend(), ""]
        if headline is not None:
            lines += [f"![protection]({Path(headline).as_posix()})", ""]
    if frontier_figure is not None:
        lines += ["## Privacy–utility–cost frontier", "", *frontier.table(cells), "", frontier.legend(), "",
                  f"![frontier]({Path(frontier_figure).as_posix()})", ""]  # fmt: skip
    if key_lines := keys.table(rows):
        lines += ["## Key recovery from shared decryptions", "", *key_lines, "", keys.legend(), ""]
    return lines


def write_report(
    rows: Sequence[Row],
    out: Path,
    *,
    title: str,
    description: str = "",
    expectations: Sequence[Mapping[str, Any]] = (),
    figures: Sequence[Path | str] = (),
    runs_total: int | None = None,
    captions: Mapping[str, str] | None = None,
    headline: Path | str | None = None,
    frontier_figure: Path | str | None = None,
) -> Path:
    """Write report.md (`out` is the file, or a folder to write report.md into); returns its path.

    The first screen is the answer: the compact protection table (he_leak.report.protection, when the rows hold several
    protections), its legend and `headline` (the protection figure, relative to the report's folder); the prose
    follows — the description, the verdict per (protection, attacker), the expectations, the per-attack tables and
    the other figures; with `frontier_figure` the privacy–utility–cost frontier (table and figure) follows the
    protection table. `expectations`: evaluated expectation rows (ExpectationResult.as_row(): expect, value, runs,
    met, note). `figures`: image paths relative to the report's folder, linked at the end; `captions` (by the
    figure's posix path) are printed under their figure."""
    out = Path(out)
    path = out if out.suffix == ".md" else out / "report.md"
    recorded = f"{len(rows)} run(s) recorded" + (f" of {runs_total}" if runs_total is not None else "")
    failures = len(_failures(rows))
    lines = [f"# {title}", "",
             f"{recorded}; {sum(1 for r in rows if r.get('success') is True)} succeeded, {failures} failed.", ""]
    cells = protection.summarise(rows) if rows else []
    lines += answer(rows, cells, headline=headline, frontier_figure=frontier_figure)
    if description:
        lines += ["## About this experiment", "", description.strip(), ""]
    if rows:
        lines += ["## Verdict", "", *verdict(rows, cells), ""]
    else:
        lines += ["No runs recorded yet.", ""]
    if expectations:
        met = sum(1 for e in expectations if e.get("met") is True)
        lines += ["## Expectations", "", f"{met} of {len(expectations)} met.", ""]
        lines += [*expectations_table(expectations), ""]
    if rows:
        lines += ["## Results", "", "Medians over the runs where the value exists (— where none has it).", ""]
        lines += results_tables(rows)
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines.append(f"![{Path(f).stem}]({Path(f).as_posix()})")
            caption = (captions or {}).get(Path(f).as_posix())
            if caption:
                lines += ["", f"*{caption}*", ""]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path
