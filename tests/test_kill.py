"""Crash-proof sweeps, tested on a real `he-leak run` killed at random points: SIGKILL of the driver, Ctrl-C (SIGINT)
of the driver and SIGKILL of pool workers, three times each; after the resume no run is lost and none is recorded
twice, and every row equals the row of an uninterrupted sweep (timings aside). Two sweeps into one folder: the second
is refused in one line naming the first."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stubs import cheap_grid, rows_by_config

from he_leak.sweep.driver import run_experiment
from he_leak.sweep.lock import lock_holder
from he_leak.sweep.store import RESULTS_FILE, read_results

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3
INDICES, SEEDS = 200, 2  # 400 runs of a few milliseconds: a sweep lasts long enough to be hit mid-way
SEED = int(os.environ.get("HE_LEAK_KILL_SEED", "0"))  # the kill points are random, and reproducible from this
TIMEOUT = 240.0

pytestmark = pytest.mark.slow


def start(grid: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "he_leak", "run", str(grid), "--out", str(out), "--quiet", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def lines(out: Path) -> int:
    try:
        return (out / RESULTS_FILE).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for(condition, proc: subprocess.Popen, what: str) -> bool:
    """Poll until `condition()` holds (True) or the process ended first (False)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    return True



def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            out += [int(p) for p in (task / "children").read_text().split()]
    return out


def pool_workers(driver: int) -> list[int]:
    """The pool's workers: children of the driver's forkserver."""
    for child in children(driver):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmdline:
            return children(child)
    return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("kill")
    grid = cheap_grid(folder, indices=INDICES, seeds=SEEDS)
    run_experiment(grid, folder / "reference", quiet=True)
    return grid, rows_by_config(folder / "reference")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_driver_resumes_with_nothing_lost_or_duplicated(tmp_path: Path, reference, sig: signal.Signals) -> None:
    grid, expected = reference
    rng = random.Random(f"{SEED}-{sig.name}")
    out = tmp_path / "out"
    hit = 0
    for kill in range(KILLS):
        target = lines(out) + rng.randint(1, len(expected) // (2 * KILLS))
        proc = start(grid, out, "--workers", "2")
        if not wait_for(lambda t=target: lines(out) >= t, proc, f"{target} lines"):
            proc.communicate()  # finished before the kill point: nothing to test this round
            continue
        workers = pool_workers(proc.pid)
        proc.send_signal(sig)
        print(f"{sig.name} of the driver at {lines(out)} of {len(expected)} lines")  # shown with pytest -s
        _, err = proc.communicate(timeout=TIMEOUT)
        hit += 1
        seed_note = f"(kill {kill + 1}, HE_LEAK_KILL_SEED={SEED})"
        if sig == signal.SIGINT:
            assert proc.returncode == 130, err
            recorded = len(read_results(out / RESULTS_FILE))
            assert err.strip().splitlines()[-1] == (
                f"he-leak: interrupted after {recorded} of {len(expected)} runs; rerun to resume"
            ), seed_note
            assert (out / RESULTS_FILE).read_bytes().endswith(b"\n"), f"a partial line after Ctrl-C {seed_note}"
            assert "Traceback" not in err, err
        else:
            assert proc.returncode == -signal.SIGKILL
        time.sleep(2.5)  # workers notice a dead driver within a second
        assert not [w for w in workers if alive(w)], f"workers outlived their driver {seed_note}"
        assert lock_holder(out) is None
    assert hit >= 2, "the sweep ended before most kill points: make it longer"
    proc = start(grid, out, "--workers", "2")
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert rows_by_config(out) == expected  # 0 lost, 0 duplicated, every row as an uninterrupted sweep made it
    print(f"resumed: {len(expected)} rows, none lost, none twice, all equal to an uninterrupted sweep's")


def test_killed_workers_lose_nothing(tmp_path: Path, reference) -> None:
    grid, expected = reference
    rng = random.Random(f"{SEED}-worker")
    out = tmp_path / "out"
    proc = start(grid, out, "--workers", "2")
    killed = []
    for _ in range(KILLS):
        target = lines(out) + rng.randint(1, len(expected) // (2 * KILLS))
        if not wait_for(lambda t=target: lines(out) >= t and pool_workers(proc.pid), proc, f"{target} lines"):
            break
        victim = rng.choice(pool_workers(proc.pid))
        os.kill(victim, signal.SIGKILL)
        print(f"SIGKILL of worker {victim} at {lines(out)} of {len(expected)} lines")  # shown with pytest -s
        killed.append(victim)
        wait_for(lambda v=victim: not alive(v) and len(pool_workers(proc.pid)) == 2, proc, "a replacement worker")
    _, err = proc.communicate(timeout=TIMEOUT)
    assert len(killed) >= 2, "the sweep ended before most kill points: make it longer"
    assert proc.returncode == 0, err
    assert rows_by_config(out) == expected  # 0 lost, 0 duplicated, no run recorded as failed
    print(f"finished: {len(expected)} rows, none lost, none twice, all equal to an uninterrupted sweep's")


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    grid = tmp_path / "slow.toml"  # 100 DLG runs of ~0.3 s: the first sweep is still running when the second starts
    grid.write_text('[fixed]\nattack = "dlg"\nmodel = "mlp"\nhidden = [32]\niterations = 200\n'
                    '[[grid]]\nindex = ' + str(list(range(100))) + "\n")  # fmt: skip
    out = tmp_path / "out"
    first = start(grid, out)
    assert wait_for(lambda: lines(out) >= 1, first, "the first sweep to start")
    second = subprocess.run([sys.executable, "-m", "he_leak", "run", str(grid), "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert first.poll() is None, "the first sweep ended before the second started: the test tested nothing"
    assert second.returncode == 2 and second.stdout == ""
    (line,) = second.stderr.strip().splitlines()
    assert f"is in use by another he-leak run (pid {first.pid} on " in line and "started" in line
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 130, err
    rows = rows_by_config(out)  # refuses duplicates
    assert 1 <= len(rows) < 100 and (out / RESULTS_FILE).read_bytes().endswith(b"\n")
