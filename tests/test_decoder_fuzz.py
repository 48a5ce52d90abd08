"""Memory safety of the native decoder: fuzz/run.py (libFuzzer + AddressSanitizer +
UndefinedBehaviorSanitizer) for a bounded time, from the captures and the fixed malformed
cases, with zero findings. ``FUZZ_SECONDS`` sets the time (30 by default). Marked ``fuzz``: the
suite deselects it (it must stay under 15 minutes), and .ci/run runs it on its own after the suite
for 120 s (``pytest -m fuzz``); docs/decoder.md says how to fuzz longer."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz_run", ROOT / "fuzz" / "run.py")
assert _spec is not None and _spec.loader is not None
fuzz_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_run)


@pytest.mark.fuzz
def test_the_native_decoder_survives_fuzzing(tmp_path: Path) -> None:
    if fuzz_run.find_clang() is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must fuzz: .ci/run installs clang")
        pytest.skip("clang is not installed (Debian: apt-get install clang libclang-rt-14-dev; .ci/run does)")
    seconds = os.environ.get("FUZZ_SECONDS", "30")
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), "--seconds", seconds, "--artifacts", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=int(seconds) + 600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Done" in result.stderr and "ERROR" not in result.stderr, result.stderr[-5000:]
    assert not list(tmp_path.iterdir()), "the fuzzer left a crashing input"
