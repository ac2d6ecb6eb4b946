"""The methods `he-leak bench` times: the original DLG loop (Zhu et al. 2019) and the project's attacks, each run with
its own stopping rule on one (image, seed) problem; and the peak-memory probe around a run."""

from __future__ import annotations

import contextlib
import ctypes
import math
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from he_leak.attacks.base import AttackOptions, make_attack
from he_leak.attacks.dlg import default_dtype
from he_leak.attacks.labels import recover_labels
from he_leak.attacks.optim.lbfgs_match import dlg_lbfgs
from he_leak.errors import AttackFailed
from he_leak.models import ModelSpec, build_model
from he_leak.records import Observation
from he_leak.registry import Registry
from he_leak.scoring import metrics

SUCCESS_PSNR = 40.0


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One (image, seed) pair of the DLG setting: the seeded model, the true image's gradient and the truth (the
    truth is for scoring only; no method sees it)."""

    index: int
    seed: int
    model: nn.Module
    grads: tuple[torch.Tensor, ...]
    truth: torch.Tensor
    label: torch.Tensor

    def observation(self) -> Observation:
        return Observation(model=self.model, gradients=self.grads, input_shape=tuple(self.truth.shape[1:]), batch=1,
                           classes=self.label_classes)  # fmt: skip

    @property
    def label_classes(self) -> int:
        return int(self.grads[-1].shape[0])


def make_problem(image: torch.Tensor, label: int, *, model: str, classes: int, seed: int, index: int,
                 device: torch.device) -> Problem:  # fmt: skip
    """The problem of attacking `image` (1×C×H×W) with label `label` through the seeded `model`."""
    spec = ModelSpec(name=model, input_shape=tuple(image.shape[1:]), classes=classes, seed=seed)
    net = build_model(spec).to(device)
    truth, y = image.to(device), torch.tensor([label % classes], device=device)
    grads = torch.autograd.grad(F.cross_entropy(net(truth), y), list(net.parameters()))
    return Problem(index=index, seed=seed, model=net, grads=tuple(g.detach() for g in grads), truth=truth, label=y)


@dataclass(frozen=True)
class Outcome:
    """What a method returned on one problem (before scoring)."""

    inputs: torch.Tensor | None  # None when it failed
    steps: int
    oracle_time: float | None  # seconds until the PSNR first reached SUCCESS_PSNR (bookkeeping; None if never/n.a.)
    diverged: bool = False
    note: str = ""


def psnr(x: torch.Tensor, truth: torch.Tensor) -> float:
    """PSNR in dB (data range 1) of x clamped to [0, 1]; NaN when x holds NaN."""
    return metrics.psnr(x.detach().double().clamp(0, 1).cpu().numpy(), truth.double().cpu().numpy())


Method = Callable[..., Outcome]  # method(problem, *, steps, device, x_tol) -> Outcome
METHODS: Registry = Registry("bench method")


@METHODS.register("original")
def original(p: Problem, *, steps: int, device: torch.device, x_tol: float) -> Outcome:
    """The original DLG loop: randn dummies, LBFGS(lr=1), no line search, raw squared gradient distance; it runs its
    `steps` steps (its only stopping rule) unless the loss becomes non-finite."""
    params = list(p.model.parameters())
    gen = torch.Generator().manual_seed(p.seed)
    dummy = torch.randn(p.truth.shape, generator=gen).to(device).requires_grad_(True)
    dummy_label = torch.randn((p.truth.shape[0], p.label_classes), generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.LBFGS([dummy, dummy_label])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        pred = p.model(dummy)
        loss = torch.mean(torch.sum(-F.softmax(dummy_label, -1) * F.log_softmax(pred, -1), -1))
        dy_dx = torch.autograd.grad(loss, params, create_graph=True)
        diff = sum(((gx - gy) ** 2).sum() for gx, gy in zip(dy_dx, p.grads, strict=True))
        diff.backward()
        return diff

    t0, t_succ = time.perf_counter(), None
    for step in range(1, steps + 1):
        loss = float(opt.step(closure).detach())
        if not (math.isfinite(loss) and bool(torch.isfinite(dummy).all())):
            return Outcome(None, step, t_succ, diverged=True, note=f"non-finite at step {step}")
        if t_succ is None and psnr(dummy, p.truth) >= SUCCESS_PSNR:
            t_succ = time.perf_counter() - t0
    return Outcome(dummy.detach(), steps, t_succ)


def _matching(
    p: Problem, *, steps: int, device: torch.device, x_tol: float, known: bool, dtype: torch.dtype | None = None
) -> Outcome:
    dtype = dtype or default_dtype(device)  # the attacks' own precision policy
    t0, t_succ = time.perf_counter(), []

    def monitor(step: int, x: torch.Tensor) -> None:  # bookkeeping only: the attack never sees it
        if not t_succ and psnr(x, p.truth) >= SUCCESS_PSNR:
            t_succ.append(time.perf_counter() - t0)

    label = recover_labels(p.observation()) if known else None
    try:
        x, _, used, _ = dlg_lbfgs(p.model, p.grads, input_shape=tuple(p.truth.shape[1:]), classes=p.label_classes,
                                  steps=steps, seed=p.seed, device=device, monitor=monitor, label=label,
                                  x_tol=x_tol, dtype=dtype)  # fmt: skip
    except AttackFailed as e:
        return Outcome(None, steps, None, diverged=True, note=str(e))
    return Outcome(x, used, t_succ[0] if t_succ else None)


@METHODS.register("dlg")
def dlg(p: Problem, *, steps: int, device: torch.device, x_tol: float) -> Outcome:
    """The project's `dlg` (soft labels optimised jointly) with the attacker-side stop `x_tol`."""
    return _matching(p, steps=steps, device=device, x_tol=x_tol, known=False)


@METHODS.register("dlg-f32")
def dlg_f32(p: Problem, *, steps: int, device: torch.device, x_tol: float) -> Outcome:
    """`dlg` in float32 first, escalated to float64 when it stalls (the CUDA policy) — on the CPU for comparison:
    more steps to 40 dB on LeNet/photos (91/47/33/61/78 against 65/41/32/50/75 in float64 on the first five pairs)."""
    return _matching(p, steps=steps, device=device, x_tol=x_tol, known=False, dtype=torch.float32)


@METHODS.register("idlg")
def idlg(p: Problem, *, steps: int, device: torch.device, x_tol: float) -> Outcome:
    """The project's `idlg` (labels read from the last layer's gradient) with the attacker-side stop `x_tol`."""
    return _matching(p, steps=steps, device=device, x_tol=x_tol, known=True)


@METHODS.register("ig")
def ig(p: Problem, *, steps: int, device: torch.device, x_tol: float) -> Outcome:
    """The project's `ig` (cosine + TV, signed Adam) with its own schedule: its default iteration count."""
    attack = make_attack("ig", AttackOptions(seed=p.seed, device=device))
    try:
        rec = attack.reconstruct(p.observation())
    except AttackFailed as e:
        return Outcome(None, attack.iterations, None, diverged=True, note=str(e))
    return Outcome(rec.inputs, rec.iterations, None, note="oracle time n/a (no per-step view)")


@METHODS.register("analytic")
def analytic(p: Problem, *, steps: int, device: torch.device, x_tol: float) -> Outcome:
    """The closed-form attack; it needs a fully connected first layer, so on a convolutional model it reports why
    not (the bench runs it on the MLP problem of the same image instead)."""
    attack = make_attack("analytic", AttackOptions(seed=p.seed, device=device))
    try:
        rec = attack.reconstruct(p.observation())
    except AttackFailed as e:
        return Outcome(None, 0, None, note=f"n/a: {e}")
    return Outcome(rec.inputs, rec.iterations, None)


def _release_freed_memory() -> None:
    """Hand the heap's freed memory back to the system (glibc's malloc_trim) before a CPU measurement: otherwise a run
    that follows a larger one reuses what the process already holds and its resident set does not grow (ig after dlg
    measured 0.0 MiB). A no-op where the C library has no malloc_trim."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class PeakMemory:
    """Peak memory of the code inside `with`, above what was in use when it started: on CUDA the allocator's peak
    (torch.cuda.max_memory_allocated); on CPU the process's resident set sampled every 2 ms from /proc/self/statm,
    after freed heap memory is handed back (ru_maxrss is a high-water mark for the whole process and would hide every
    run after the largest)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        except OSError:  # not Linux: the high-water mark is the best there is
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self, base: int) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss() - base)

    def __enter__(self) -> PeakMemory:
        _release_freed_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, args=(self._rss(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
