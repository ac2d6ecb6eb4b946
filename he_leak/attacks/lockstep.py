"""K independent optimisations whose objective evaluations are served together by one batched call.

Each job runs its own optimiser (here the L-BFGS of `he_leak.attacks.lbfgs`, whose scipy line search asks for
evaluations through a callback) in a thread and asks for f(z), ∇f(z) through `evaluate`; the driver waits until every
job still running has asked, then serves them all with one call of the batched objective (one vmapped forward and
backward for all of them). A job's trajectory depends only on its own evaluations, so each job follows the path it
would follow alone, up to the float rounding of the batched kernels. Threads only wait here: the work is in the
batched call (torch releases the GIL in its kernels).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

Evaluation = tuple[float, torch.Tensor]  # f(z), ∇f(z)
Evaluate = Callable[[torch.Tensor], Evaluation]
# (job ids, their points) -> one evaluation per job, in order (one batched pass)
BatchedObjective = Callable[[Sequence[int], Sequence[torch.Tensor]], Sequence[Evaluation]]
Job = Callable[[Evaluate], Any]


def run_lockstep(jobs: Sequence[Job], objective: BatchedObjective) -> list[Any]:
    """Run every job with an `evaluate` served by `objective` in lockstep; each job's return value, or the exception
    it raised (returned, not raised, so one failed job does not stop the others)."""
    cond = threading.Condition()
    pending: dict[int, torch.Tensor] = {}
    served: dict[int, Evaluation | BaseException] = {}
    results: list[Any] = [None] * len(jobs)
    live = [len(jobs)]

    def worker(i: int) -> None:
        def evaluate(z: torch.Tensor) -> Evaluation:
            with cond:
                pending[i] = z
                cond.notify_all()
                cond.wait_for(lambda: i in served)
                out = served.pop(i)
            if isinstance(out, BaseException):
                raise out
            return out

        try:
            results[i] = jobs[i](evaluate)
        except BaseException as e:  # noqa: BLE001  (handed back to the caller as the job's result)
            results[i] = e
        finally:
            with cond:
                live[0] -= 1
                cond.notify_all()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    while True:
        with cond:
            cond.wait_for(lambda: len(pending) == live[0])
            if not live[0]:
                break
            ids = sorted(pending)
            points = [pending.pop(i) for i in ids]
        try:
            outs: Sequence[Evaluation | BaseException] = objective(ids, points)
        except Exception as e:  # noqa: BLE001  (every job waiting on this batch sees the error)
            outs = [e] * len(ids)
        with cond:
            served.update(zip(ids, outs, strict=True))
            cond.notify_all()
    for t in threads:
        t.join()
    return results
