"""The Triton kernels, compiled on CUDA, or interpreted on CPU in a fresh process.

``TRITON_INTERPRET=1`` only takes effect if it is set before triton is imported, and other test
modules (anything importing isr_reid.kernels) import triton first; so on a CPU-only machine the
cases in kernels_triton_cases.py run in a child pytest started with the variable set, unless this
process already interprets (``TRITON_INTERPRET=1 pytest tests/test_kernels_triton.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch


def _interpreting_in_process() -> bool:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    import triton.language.standard as std
    from triton.runtime.interpreter import InterpretedFunction

    # a jit function of triton's own library tells whether triton was imported under the interpreter
    return isinstance(std.sum, InterpretedFunction)


if torch.cuda.is_available() or _interpreting_in_process():
    from kernels_triton_cases import *  # noqa: F403  (pytest collects the cases here)
else:

    def test_interpreted_kernels_in_a_fresh_process(request) -> None:
        here = Path(__file__).resolve()
        env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "pytest", str(here), "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        cmd += ["--data-root", str(request.config.getoption("--data-root"))]
        r = subprocess.run(cmd, cwd=here.parents[1], env=env, capture_output=True, text=True, timeout=900)
        report = r.stdout[-8000:] + r.stderr[-2000:]
        assert r.returncode == 0, report
        passed = re.search(r"(\d+) passed", r.stdout)
        assert passed is not None and int(passed.group(1)) >= 40, report
        # every case ran interpreted, except the torch.compile one that needs a GPU
        skipped = re.search(r"(\d+) skipped", r.stdout)
        assert skipped is None or (int(skipped.group(1)) == 1 and "needs a GPU" in r.stdout), report
