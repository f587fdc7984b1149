"""Memory exhaustion is a MemoryError, never an abort (issue 16, items 2 and 7): a theory too
large for an address-space limit (``RLIMIT_AS`` in a subprocess) is refused up front with the
estimate and the options that reduce it, and an allocation that fails in the core (the estimate
bypassed) surfaces as MemoryError as well."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rgflow.recursions._mlp import theory_memory

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")

CHILD = r"""
import json, resource, sys
import numpy as np
import rgflow
from rgflow._util.native import core
from rgflow.gauss import core_activation

net = rgflow.MLP("tanh", depth=10, width=8)
rgflow.theory(net, np.eye(3))  # start the thread pool before the limit
vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:")][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + 1_000_000_000, resource.RLIM_INFINITY))
x = np.random.default_rng(0).normal(size=(48, 3))
out = {}
try:
    rgflow.theory(net, x)
    out["theory"] = "ok"
except MemoryError as e:
    out["theory"] = "MemoryError: " + str(e)
L = net.depth
ones = np.ones(L)
try:  # the core directly, without the estimate: the fallible allocation
    core.mlp_theory(core_activation(net.activation), x, np.full(L + 1, 8.0), ones, ones, ones, ones,
                    True, 1, 0, False)
    out["core"] = "ok"
except MemoryError as e:
    out["core"] = "MemoryError: " + str(e)
r = rgflow.theory(net, x[:4])  # the process is still usable
out["after"] = float(r.V[-1, 0, 0, 0, 0])
print(json.dumps(out))
"""


def test_theory_under_an_address_space_limit_raises_memory_error() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    msg = res["theory"]
    assert msg.startswith("MemoryError: "), msg
    # the estimate, where the limit comes from, and the options that reduce it
    assert "GB" in msg and "RLIMIT_AS" in msg and "ntk=False" in msg and "fewer inputs" in msg
    assert res["core"].startswith("MemoryError: ") and "out of memory" in res["core"], res["core"]
    assert res["after"] == res["after"]  # finite, computed after the failures


def test_memory_estimate_counts_the_four_point_tensors() -> None:
    # V, D, F, A, B at N = 64, depth 10: 5·10·64⁴·8 bytes = 6.7 GB, plus working tables
    est = theory_memory(64, 64, 10, True, 1, False, False)
    assert 6.7e9 < est < 1.2e10
    assert theory_memory(64, 64, 10, False, 1, False, False) < est / 3
    assert theory_memory(64, 64, 10, True, 0, False, False) < 2e6  # two-point only
