"""How far the Hutchinson estimate of the sensitivity map (16 probes per sample, the project's old default) is from
the exact map, measured as the top-set overlap |A ∩ B| / |A| of the entries each would encrypt at p = 0.05 / 0.1 /
0.3; plus what the exact map costs (seconds, peak memory), whether summing the clients' maps under CKKS changes the
mask, and how far the old map — computed on the attacked image itself — is from FedML-HE's, computed by the client on
its own data before training.

Each map is the one he-aggregate uses: client 0's own `sensitivity_samples` (32) samples drawn by the scenario, the
seeded global model of seed 0, cross-entropy. One torch thread.

Run from the repository root: nice -n 10 python -m experiments.sensitivity_overlap [--probe-seeds 5] > OUT.md
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from he_leak import scenarios as _scenarios  # noqa: F401  (registers the scenarios)
from he_leak.config import RunConfig
from he_leak.data import load_dataset
from he_leak.models import build_model
from he_leak.scenarios.base import SCENARIOS, model_spec
from he_leak.scenarios.sensitivity import PROBES, client_map, exact, hutchinson, overlap

CASES = {
    "MLP (32 sigmoid units) / digits": dict(model="mlp", hidden=(32,), data="digits", classes=10),
    "LeNet / photos (100 classes)": dict(model="lenet", data="photos", classes=100),
}
FRACTIONS = (0.05, 0.1, 0.3)
HE_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.425, 0.7, 0.9)
ATTACKED = (3, 40, 17)  # images the old per-batch map was computed on


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(fields: dict, probe_seeds: int) -> dict:
    """The overlaps, timings and peak memory of one model / data case."""
    cfg = RunConfig(scenario="he-aggregate", role="server", encrypt_fraction=0.1, select="sensitivity", **fields)
    ds = load_dataset(cfg.data)
    scenario = SCENARIOS[cfg.scenario](cfg)
    spec = model_spec(cfg, scenario.input_shape(ds.shape))
    model = build_model(spec)
    _, draws = scenario.client_data()
    x, y = torch.from_numpy(ds.images[draws[0]]), torch.from_numpy(ds.labels[draws[0]])
    before = _peak_gib()
    start = time.perf_counter()
    ref = client_map(model, x, y, loss="cross-entropy", method="exact", seed=0)  # cached for the scenario below
    out: dict = {"samples": len(x), "exact_s": time.perf_counter() - start, "peak_gib": _peak_gib(),
                 "peak_before_gib": before, "params": sum(p.numel() for p in model.parameters()),
                 "inputs": int(np.prod(ds.shape))}  # fmt: skip
    hutch, seconds = [], []
    for s in range(probe_seeds):
        start = time.perf_counter()
        est = hutchinson(model, x, y, loss="cross-entropy", seed=s)
        seconds.append(time.perf_counter() - start)
        hutch.append([overlap(ref, est, p) for p in FRACTIONS])
    out["hutchinson"], out["hutchinson_s"] = np.array(hutch), float(np.median(seconds))
    start = time.perf_counter()
    summed = scenario.sensitivity_map(model)  # the exact map is cached: this is the CKKS aggregation
    out["he_s"], out["he_bytes"] = time.perf_counter() - start, scenario.map_info["map_he_bytes"]
    out["he_overlap"] = [overlap(ref, summed, p) for p in HE_FRACTIONS]
    own, single = [], []
    for i in ATTACKED:  # the old setting: the map of the attacked image alone, exact and by Hutchinson
        xi, yi = torch.from_numpy(ds.images[[i]]), torch.from_numpy(ds.labels[[i]])
        one = exact(model, xi, yi, loss="cross-entropy")
        own.append([overlap(ref, one, p) for p in FRACTIONS])
        for s in range(probe_seeds):
            est = hutchinson(model, xi, yi, loss="cross-entropy", seed=s)
            single.append([overlap(one, est, p) for p in FRACTIONS])
    out["own_data"], out["single"] = np.array(own), np.array(single)
    return out


def report(results: dict[str, dict], probe_seeds: int) -> str:
    ps = " / ".join(f"{p:g}" for p in FRACTIONS)
    lines = [
        f"## Exact vs Hutchinson ({PROBES} probes per sample): top-set overlap |A∩B|/|A| at p = {ps}",
        "",
        f"Mean (min) over {probe_seeds} probe seeds (and the images); A = the exact map's top p, B = Hutchinson's on "
        "the same samples; seed 0's model.",
        "",
        "| model / data | samples | " + " | ".join(f"p = {p:g}" for p in FRACTIONS) + " |",
        "|---|---|" + "---|" * len(FRACTIONS),
    ]
    for name, r in results.items():
        cells = [f"{m:.3f} ({lo:.3f})" for m, lo in zip(r["hutchinson"].mean(0), r["hutchinson"].min(0), strict=True)]
        lines.append(f"| {name} | {r['samples']} (the client's own) | " + " | ".join(cells) + " |")
        cells = [f"{m:.3f} ({lo:.3f})" for m, lo in zip(r["single"].mean(0), r["single"].min(0), strict=True)]
        lines.append(f"| {name} | 1 (the attacked image: the old setting; images {', '.join(map(str, ATTACKED))}) | "
                     + " | ".join(cells) + " |")
    lines += ["", "## Cost of the exact map (one torch thread, float64)", "",
              "| model / data | D inputs | P parameters | exact: s per sample | exact: whole map | peak RSS (GiB) | "
              f"Hutchinson ({PROBES} probes): whole map | CKKS sum of the map: s, MB |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {r['inputs']} | {r['params']} | {r['exact_s'] / r['samples']:.3f} | "
                     f"{r['exact_s']:.1f} s | {r['peak_gib']:.2f} (before: {r['peak_before_gib']:.2f}) | "
                     f"{r['hutchinson_s']:.1f} s | {r['he_s']:.2f} s, {r['he_bytes'] / 1e6:.2f} MB |")  # fmt: skip
    hp = " / ".join(f"{p:g}" for p in HE_FRACTIONS)
    lines += ["", f"## Mask from the CKKS-summed map vs the plaintext map (overlap at p = {hp})", ""]
    for name, r in results.items():
        lines.append(f"- {name}: " + " / ".join(f"{v:.4f}" for v in r["he_overlap"]))
    lines += ["", f"## The old map (exact, on the attacked image alone) vs FedML-HE's (on the client's own samples): "
              f"overlap at p = {ps}", "", "Images " + ", ".join(map(str, ATTACKED)) + ": mean (min).", ""]  # fmt: skip
    for name, r in results.items():
        cells = [f"{m:.3f} ({lo:.3f})" for m, lo in zip(r["own_data"].mean(0), r["own_data"].min(0), strict=True)]
        lines.append(f"- {name}: " + " / ".join(cells))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe-seeds", type=int, default=5, help="Hutchinson probe seeds averaged")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {name: measure(fields, args.probe_seeds) for name, fields in CASES.items()}
    print(report(results, args.probe_seeds), end="")


if __name__ == "__main__":
    main()
