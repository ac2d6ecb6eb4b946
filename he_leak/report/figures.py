"""Figures (matplotlib, Agg canvas, never a display): one run's panels, and an experiment's overview PNGs."""

from __future__ import annotations

import math
import re
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from he_leak.config import run_hash
from he_leak.errors import DataError
from he_leak.report.expectations import Plot
from he_leak.text import encryptor_name

PANEL_ORDER = ("truth", "recovered", "view", "recovered_view", "decrypted", "keyless", "reconstruction")
NOT_IMAGES = ("labels",)  # panels that are not drawn (an unscored run's recovered labels)
PANEL_LABELS = {
    "truth": "truth",
    "reconstruction": "reconstruction",
    "view": "ciphertext view",
    "recovered_view": "recovered view",
    "decrypted": "decrypted (key)",
    "keyless": "keyless estimate",
    "recovered": "recovered",  # the attacker's estimate where the run has no key (plain)
}
CELL = 1.6  # inches per image


def to_images(array: Any) -> list[np.ndarray]:
    """A panel as a list of displayable images (H×W grey or H×W×3 RGB, float in [0,1]).

    Accepts B×C×H×W (the panel convention), C×H×W with C in (1, 3) (one image), B×H×W, H×W, or a flat vector
    (drawn as a near-square image). C=1 is grey, C=3 RGB, any other C the channel mean. NaN/inf are drawn as 0."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 1:
        a = _square(a)[None, None]
    elif a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[None] if a.shape[0] in (1, 3) else a[:, None]
    elif a.ndim != 4:
        raise DataError(f"cannot draw an array of shape {a.shape}; expected B×C×H×W images")
    a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    images = []
    for image in a:
        if image.shape[0] == 1:
            images.append(image[0])
        elif image.shape[0] == 3:
            images.append(np.moveaxis(image, 0, -1))
        else:
            images.append(image.mean(axis=0))
    return images


def _square(v: np.ndarray) -> np.ndarray:
    side = math.ceil(math.sqrt(len(v))) or 1
    padded = np.zeros(side * side)
    padded[: len(v)] = v
    return padded.reshape(side, side)


def ordered_panels(panels: Mapping[str, Any]) -> list[str]:
    """Panel names in the drawing order: truth, recovered, view, recovered_view, decrypted, keyless, then the rest
    sorted."""
    known = [p for p in PANEL_ORDER if p in panels and panels[p] is not None]
    return known + sorted(p for p in panels if p not in PANEL_ORDER + NOT_IMAGES and panels[p] is not None)


def _draw(ax: Any, image: np.ndarray | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if image is None:
        return
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100, format="png")
    tmp.replace(path)
    return path


def save_run_figure(panels: Mapping[str, Any], path: Path, *, title: str | None = None, max_images: int = 8) -> Path:
    """One run: a row per panel (truth above the reconstructions), a column per batch image (at most `max_images`)."""
    names = ordered_panels(panels)
    if not names:
        raise DataError("no panels to draw")
    images = {n: to_images(panels[n])[:max_images] for n in names}
    cols = max(len(v) for v in images.values())
    fig = Figure(figsize=(max(2.5, CELL * cols + 1.2), CELL * len(names) + (0.5 if title else 0.2)))
    axes = fig.subplots(len(names), cols, squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            _draw(ax, images[name][c] if c < len(images[name]) else None)
            if c == 0:
                ax.set_ylabel(PANEL_LABELS.get(name, name), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join("none" if p is None else str(p) for p in parts)).strip("-")


def _load_panels(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None


def experiment_figures(
    rows: Sequence[Mapping[str, Any]], runs_dir: Path, out_dir: Path, *, max_runs: int = 4
) -> list[Path]:
    """One PNG per scenario × encryptor × attack (a few runs side by side, panels as rows, first image of each
    batch) and plaintext_psnr.png (PSNR by attack, one box plot per scenario × encryptor). Returns the paths."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    written: list[Path] = []
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (row.get("scenario"), encryptor_name(row.get("encryptor")), row.get("attack"))
        groups.setdefault(key, []).append(row)
    for (scenario, encryptor, attack), group in groups.items():
        shown = []
        for row in group:
            if not isinstance(row.get("config"), dict):
                continue
            panels = _load_panels(runs_dir / f"{run_hash(row['config'])}.npz")
            if panels:
                shown.append((row, panels))
            if len(shown) == max_runs:
                break
        if shown:
            title = f"{scenario} · encryptor {encryptor} · {attack}"
            written.append(_runs_figure(shown, out_dir / f"runs_{_slug(scenario, encryptor, attack)}.png", title))
    box = _psnr_figure(rows, out_dir / "plaintext_psnr.png")
    if box is not None:
        written.append(box)
    return written


def _runs_figure(shown: Sequence[tuple[Mapping[str, Any], Mapping[str, np.ndarray]]], path: Path, title: str) -> Path:
    names: list[str] = []
    for _, panels in shown:
        names += [n for n in ordered_panels(panels) if n not in names]
    names = ordered_panels(dict.fromkeys(names, True))
    fig = Figure(figsize=(max(3.0, CELL * len(shown) + 1.2), CELL * len(names) + 0.9))
    axes = fig.subplots(len(names), len(shown), squeeze=False)
    for c, (row, panels) in enumerate(shown):
        for r, name in enumerate(names):
            ax = axes[r][c]
            images = to_images(panels[name]) if name in panels else []
            _draw(ax, images[0] if images else None)
            if c == 0:
                ax.set_ylabel(PANEL_LABELS.get(name, name), fontsize=9)
        label = f"#{row.get('index')} seed {row.get('seed')}"
        if isinstance(row.get("plaintext_psnr"), int | float):
            label += f"\n{row['plaintext_psnr']:.1f} dB"
        elif row.get("error"):
            label += "\nfailed"
        axes[0][c].set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _psnr_figure(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    groups: dict[tuple[Any, Any], dict[Any, list[Mapping[str, Any]]]] = {}
    for row in rows:
        by_attack = groups.setdefault((row.get("scenario"), encryptor_name(row.get("encryptor"))), {})
        by_attack.setdefault(row.get("attack"), []).append(row)

    def values(rs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
        return [float(r[key]) for r in rs if isinstance(r.get(key), int | float) and math.isfinite(r[key])]

    if not any(values(rs, "plaintext_psnr") for g in groups.values() for rs in g.values()):
        return None
    fig = Figure(figsize=(max(4.0, 3.2 * len(groups)), 3.6))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, ((scenario, encryptor), by_attack) in zip(axes, groups.items(), strict=True):
        attacks = list(by_attack)
        data = [values(by_attack[a], "plaintext_psnr") for a in attacks]
        positions = list(range(1, len(attacks) + 1))
        present = [(p, d) for p, d in zip(positions, data, strict=True) if d]
        if present:
            ax.boxplot([d for _, d in present], positions=[p for p, _ in present], widths=0.5)
            for p, d in present:
                ax.scatter([p] * len(d), d, s=10, alpha=0.6, color="tab:blue", zorder=3)
        means = [v for a in attacks for v in values(by_attack[a], "mean_psnr")]
        if means:
            ax.axhline(statistics.median(means), color="tab:red", linestyle="--", linewidth=1, label="dataset mean")
        thresholds = {(r.get("config") or {}).get("success_psnr") for a in attacks for r in by_attack[a]}
        thresholds.discard(None)
        if len(thresholds) == 1 and present:
            ax.axhline(thresholds.pop(), color="tab:green", linestyle=":", linewidth=1, label="success threshold")
        if not present:
            ax.text(0.5, 0.5, "no plaintext estimate", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks(positions)
        ax.set_xticklabels([str(a) for a in attacks], fontsize=8)
        ax.set_xlim(0.4, len(attacks) + 0.6)
        ax.set_title(f"{scenario} · {encryptor}", fontsize=9)
        ax.set_ylabel("plaintext PSNR (dB)", fontsize=8)
        if means or ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_figure(plot: Plot, series: Mapping[str, Sequence[tuple[Any, float]]], path: Path) -> Path | None:
    """An experiment's ``[[plot]]`` (report.expectations.Plot) from its series (group → (x, y) points): lines of the
    aggregate per x, or a scatter of every run with Spearman's ρ per group in the legend. None when nothing to draw."""
    series = {g: list(points) for g, points in series.items() if points}
    if not series:
        return None
    xs_all = [x for points in series.values() for x, _ in points]
    categorical = not all(isinstance(x, float) for x in xs_all)
    categories = list(dict.fromkeys(str(x) for x in xs_all)) if categorical else []
    correlations = plot.correlations(series) if plot.kind == "scatter" else {}
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for number, (group, points) in enumerate(series.items()):
        xs = [categories.index(str(x)) if categorical else x for x, _ in points]
        ys = [y for _, y in points]
        label = group or None
        if plot.kind == "scatter":
            rho, n = correlations.get(group, (None, len(points)))
            stats = f"ρ = {rho:.2f}, n = {n}" if rho is not None else f"ρ undefined, n = {n}"
            label = f"{group} ({stats})" if group else stats
            ax.scatter(xs, ys, s=24, alpha=0.75, label=label, color=f"C{number % 10}", zorder=3)
        else:
            ax.plot(xs, ys, marker="o", markersize=4, label=label, color=f"C{number % 10}")
    if categorical:
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, fontsize=8, rotation=30 if len(categories) > 6 else 0)
    ax.set_xlabel(plot.x, fontsize=9)
    ylabel = plot.y if plot.kind == "scatter" else f"{plot.aggregate} {plot.y}"
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(textwrap.fill(plot.title or f"{plot.y} vs {plot.x}", 70), fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best", title=plot.group, title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
