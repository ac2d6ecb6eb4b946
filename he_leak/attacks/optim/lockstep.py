"""K independent optimisations whose objective evaluations are served together by one batched call, in one thread.

Each job is an `Asking` computation (`he_leak.attacks.optim.lbfgs`): it yields a request for an evaluation and is sent
the answer. The driver collects the request of every job still running, serves them all with one call of the batched
objective (one vmapped forward and backward for all of them), sends each job its answer and goes on until every job
has returned. A job's trajectory depends only on its own evaluations, so each follows the path it would follow alone,
up to the float rounding of the batched kernels.

Why not a thread per job (the first version): the jobs' Python bookkeeping between evaluations (L-BFGS memory, line
search) is serial under the GIL either way, and 16 threads handing the GIL and a condition variable around each round
cost more than the batching saved (`he-leak bench --batched 16`: 0.97× one by one, 2-core CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from he_leak.attacks.optim.lbfgs import Asking, Evaluation

# (job ids, their requests) -> one evaluation per job, in order (one batched pass)
BatchedObjective = Callable[[Sequence[int], Sequence[Any]], Sequence[Evaluation]]


def run_lockstep(jobs: Sequence[Asking[Any]], objective: BatchedObjective) -> list[Any]:
    """Drive every job to its end with evaluations served by `objective`, all pending requests at once; each job's
    return value, or the Exception it raised (returned, not raised, so one failed job does not stop the others). An
    exception from `objective` is thrown into every job of that batch."""
    results: list[Any] = [None] * len(jobs)
    pending: dict[int, Any] = {}

    def advance(i: int, step: Callable[[], Any]) -> None:
        try:
            pending[i] = step()
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as e:  # noqa: BLE001  (handed back to the caller as the job's result)
            results[i] = e

    for i, job in enumerate(jobs):
        advance(i, job.__next__)
    while pending:
        ids = sorted(pending)
        requests = [pending.pop(i) for i in ids]
        try:
            outs: Sequence[Any] = objective(ids, requests)
        except Exception as e:  # noqa: BLE001  (every job waiting on this batch sees the error)
            outs = [e] * len(ids)
        for i, out in zip(ids, outs, strict=True):
            job = jobs[i]
            if isinstance(out, BaseException):
                advance(i, lambda job=job, out=out: job.throw(out))
            else:
                advance(i, lambda job=job, out=out: job.send(out))
    return results
