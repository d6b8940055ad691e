"""Runs the ``triton`` tier in its own pytest process with ``TRITON_INTERPRET=1``.

The variable must be set before ``import triton``, so these tests cannot share a process with
the default tier; this test makes the README's single test command cover them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_triton_tier_under_the_interpreter() -> None:
    pytest.importorskip("triton", reason="triton is not installed on this platform")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    files = [
        "tests/aaren/test_triton.py",
        "tests/dsf/test_triton.py",
        "tests/lla/test_triton.py",
        "tests/mpnn_vn/test_triton.py",
        "tests/rfa/test_triton.py",
    ]
    cmd = [sys.executable, "-m", "pytest", "-m", "triton", "-q", "-p", "no:xdist", *files]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
