"""The size guard: a run too large for the machine is refused in one line before any expensive work, and the
estimate is an upper bound of a measured peak."""

import json
import subprocess
import sys

import pytest

from he_leak.config import RunConfig
from he_leak.errors import ConfigError
from he_leak.models import memory
from he_leak.runner import prepare


def test_a_run_beyond_the_limit_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(memory, "LIMIT_FRACTION", 1e-4)  # ~2 MB on any machine
    with pytest.raises(ConfigError) as err:
        prepare(RunConfig(scenario="plain", attack="dlg", model="mlp", hidden=(8,), data="digits"))
    assert "GB" in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_a_huge_model_with_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "he_leak", "attack", "--scenario", "ckks-input", "--attack", "analytic", "--model",
         "mlp", "--hidden", "200000", "--data", "photos", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "would need about" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


PROBE = """
import json, sys
from he_leak.models import memory
from he_leak.config import RunConfig
from he_leak.runner import run_one
seen = {}
original = memory.estimate
memory.estimate = lambda *a, **k: seen.setdefault("parts", original(*a, **k))
run_one(RunConfig.from_mapping(json.loads(sys.argv[1])))
# VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark across fork + exec (pytest's, here)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"estimate": sum(seen["parts"].values()), "peak": peak}))
"""


@pytest.mark.parametrize("fields", [
    dict(scenario="ckks-input", attack="analytic", model="mlp", hidden=[32], data="faces"),
    dict(scenario="plain", attack="dlg", model="lenet", data="digits", iterations=20),
])  # fmt: skip
def test_the_estimate_bounds_the_measured_peak(fields):
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(fields)], capture_output=True, text=True,
                         timeout=600, check=True)  # fmt: skip
    numbers = json.loads(out.stdout.strip().splitlines()[-1])
    assert numbers["peak"] <= numbers["estimate"], numbers
