"""Many dlg/idlg runs through one batched objective (lockstep) give what they give one by one; the attacker-side
stop ends a run early without losing the reconstruction."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from he_leak.attacks.base import AttackOptions, make_attack
from he_leak.attacks.labels import recover_labels
from he_leak.attacks.optim.lbfgs_many import MatchJob, dlg_lbfgs_many
from he_leak.attacks.optim.lbfgs_match import dlg_lbfgs
from he_leak.attacks.optim.lockstep import run_lockstep
from he_leak.bench.run import psnr
from he_leak.data import load_dataset
from he_leak.errors import AttackFailed
from he_leak.models import ModelSpec, build_model
from he_leak.records import Observation, Reconstruction

# |x_batched − x_alone| after a few float64 L-BFGS steps: the batched kernels round differently (~1e-15 per
# evaluation), and L-BFGS carries that along (line-search acceptances amplify it); measured ≤ 2e-8 at 3 steps here.
BATCH_TOL_F64 = 1e-6
# The final loss is a small difference of nearly equal gradients: measured relative difference ≤ 5e-5 — down to the
# runs that end near DEFAULT_TOL (1e-12), where rounding is a larger share: measured 2.2e-15 apart at 8.7e-13.
LOSS_RTOL = 1e-3
LOSS_ATOL = 1e-14
# float32 first (the CUDA policy; AttackOptions(dtype=torch.float32) on the CPU): rounding differences of ~1e-7 per
# evaluation, measured ≤ 6e-5 after one step (20 iterations) and up to 1.4e-3 after two, where the float32 runs have
# converged to different last digits — so the float32 comparison is after one step only.
BATCH_TOL_F32 = 1e-3


def _observation(index: int, seed: int) -> tuple[Observation, torch.Tensor]:
    ds = load_dataset("digits")
    x, y = ds.batch(index, 1)
    model = build_model(ModelSpec(name="lenet", input_shape=(1, 8, 8), classes=10, seed=seed))
    loss = F.cross_entropy(model(torch.as_tensor(x)), torch.as_tensor(y))
    grads = tuple(g.detach() for g in torch.autograd.grad(loss, list(model.parameters())))
    obs = Observation(model=model, gradients=grads, input_shape=(1, 8, 8), batch=1, classes=10)
    return obs, torch.as_tensor(x)


def test_batched_matches_one_by_one_float64() -> None:
    obs = [_observation(7 * i, i)[0] for i in range(3)]
    for known in (False, True):
        jobs = [MatchJob(model=o.model, target_grads=o.gradients, seed=10 + k,
                         label=recover_labels(o) if known else None) for k, o in enumerate(obs)]  # fmt: skip
        kw = dict(input_shape=(1, 8, 8), classes=10, steps=3, dtype=torch.float64)
        many = dlg_lbfgs_many(jobs, **kw)
        for j, got in zip(jobs, many, strict=True):
            x, probs, used, loss = dlg_lbfgs(j.model, j.target_grads, seed=j.seed, label=j.label, **kw)
            assert got[2] == used
            assert float((got[0] - x).abs().max()) <= BATCH_TOL_F64
            assert float((got[1] - probs).abs().max()) <= BATCH_TOL_F64
            assert abs(got[3] - loss) <= LOSS_RTOL * loss + LOSS_ATOL


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, BATCH_TOL_F32), (torch.float64, BATCH_TOL_F64)])
def test_reconstruct_many_matches_reconstruct(dtype: torch.dtype | None, tol: float) -> None:
    obs = [_observation(5 * i, i)[0] for i in range(3)]
    for name in ("dlg", "idlg"):
        attack = make_attack(name, AttackOptions(iterations=1, restarts=2, seed=3, dtype=dtype))
        many = attack.reconstruct_many(obs)
        for o, got in zip(obs, many, strict=True):
            alone = attack.reconstruct(o)
            assert isinstance(got, Reconstruction)
            assert float((got.inputs - alone.inputs).abs().max()) <= tol
            assert torch.equal(got.labels, alone.labels) and got.iterations == alone.iterations


def test_a_run_with_nothing_to_match_fails_alone() -> None:
    """A batched run whose target gradient is zero fails by itself; the others get what they get one by one."""
    obs = [_observation(5 * i, i)[0] for i in range(3)]
    zero = Observation(model=obs[1].model, gradients=tuple(torch.zeros_like(g) for g in obs[1].gradients),
                       input_shape=(1, 8, 8), batch=1, classes=10)  # fmt: skip
    attack = make_attack("dlg", AttackOptions(iterations=2, seed=3, dtype=torch.float64))
    many = attack.reconstruct_many([obs[0], zero, obs[2]])
    assert isinstance(many[1], AttackFailed)
    for o, got in ((obs[0], many[0]), (obs[2], many[2])):
        assert isinstance(got, Reconstruction)
        assert float((got.inputs - attack.reconstruct(o).inputs).abs().max()) <= BATCH_TOL_F64


def test_lockstep_keeps_going_when_one_job_fails() -> None:
    batches: list[list[int]] = []

    def objective(ids, points):
        batches.append(list(ids))
        if any(float(z[0]) < 0 for z in points):
            raise ValueError("negative")
        return [(float((z**2).sum()), 2 * z) for z in points]

    def good(rounds: int):
        total = 0.0
        for k in range(rounds):
            total += (yield torch.full((2,), float(k)))[0]
        return total

    def bad():
        yield torch.zeros(2)
        raise AttackFailed("no")

    def failing_objective():
        yield torch.full((2,), -1.0)  # the objective raises: thrown into every job of that batch
        return "unreachable"

    out = run_lockstep([good(3), bad(), good(2)], objective)
    assert out[0] == 0 + 2 + 8 and out[2] == 0 + 2 and isinstance(out[1], AttackFailed)
    assert batches == [[0, 1, 2], [0, 2], [0]]  # every pending request in one call; finished jobs drop out
    batches.clear()
    out = run_lockstep([good(1), failing_objective()], objective)
    assert all(isinstance(o, ValueError) for o in out) and batches == [[0, 1]]


def test_attacker_stop_ends_early_and_keeps_the_image() -> None:
    obs, truth = _observation(0, 0)
    # 8×8 digits reach DEFAULT_TOL in 4-5 steps of 20 iterations; steps of 2 iterations give the stop room to act
    kw = dict(input_shape=(1, 8, 8), classes=10, steps=200, seed=0, max_iter=2, dtype=torch.float64)
    x_stop, _, used_stop, loss_stop = dlg_lbfgs(obs.model, obs.gradients, x_tol=1e-3, **kw)
    x_full, _, used_full, loss_full = dlg_lbfgs(obs.model, obs.gradients, x_tol=0.0, **kw)
    assert used_stop < used_full and loss_full < 1e-12 < loss_stop  # measured: 19 vs 37 steps
    assert psnr(x_stop, truth) >= 40 and psnr(x_full, truth) >= psnr(x_stop, truth)  # measured 64 and 130 dB


# Record fields compared between a grouped sweep and one by one (PSNR in dB after one float32 step: see BATCH_TOL_F32;
# measured ≤ 0.01 dB apart).
PSNR_TOL_DB = 0.5


def test_sweep_groups_batchable_runs_and_records_match_one_by_one() -> None:
    from he_leak.config import RunConfig
    from he_leak.sweep.worker import execute, execute_group, group_runs

    cfgs = [RunConfig(attack="dlg", index=i, seed=s, iterations=1, device="cpu") for i, s in ((0, 0), (3, 1), (9, 2))]
    cfgs.append(RunConfig(attack="analytic", model="mlp", index=0, seed=0, device="cpu"))
    assert [len(g) for g in group_runs(cfgs)] == [1, 1, 1, 1]  # on the CPU a sweep does not group (GROUP_DEVICES)
    groups = group_runs(cfgs, devices=("cpu",))
    assert [len(g) for g in groups] == [3, 1] and groups[0] == cfgs[:3]
    grouped = execute_group(groups[0]) + [execute(groups[1][0])]
    alone = [execute(c) for c in cfgs]
    assert [r.row["config"] for r in grouped] == [r.row["config"] for r in alone]
    for g, a in zip(grouped, alone, strict=True):
        assert g.row["error"] == a.row["error"] and g.row["success"] == a.row["success"]
        assert g.row["iterations"] == a.row["iterations"] and g.row["label_correct"] == a.row["label_correct"]
        assert abs(g.row["input_psnr"] - a.row["input_psnr"]) <= PSNR_TOL_DB


def test_the_stop_acts_only_in_the_last_precision_phase_after_the_skip() -> None:
    """With float32 first, a huge x_tol must not end the float32 phase (its settling is rounding) and must end the
    float64 phase exactly X_TOL_SKIP + 1 steps after it started."""
    from he_leak.attacks.optim.lbfgs_match import X_TOL_SKIP

    obs, _ = _observation(0, 0)
    seen: list[torch.dtype] = []

    def monitor(step: int, x: torch.Tensor) -> None:  # bookkeeping: returns None, never stops the run
        seen.append(x.dtype)

    # tol=0: float32 cannot reach the tolerance, so it stalls and escalates (measured: 44 float32 steps, then 4)
    _, _, used, _ = dlg_lbfgs(obs.model, obs.gradients, input_shape=(1, 8, 8), classes=10, steps=300, seed=0,
                              max_iter=2, dtype=torch.float32, x_tol=1.0, tol=0.0, monitor=monitor)  # fmt: skip
    f32, f64 = seen.count(torch.float32), seen.count(torch.float64)
    assert f32 > X_TOL_SKIP + 1, "the float32 phase was cut short by the stop"
    assert f64 == X_TOL_SKIP + 1 and used == f32 + f64 and seen[-1] == torch.float64
