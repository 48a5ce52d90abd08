"""Build hook: compile the native decoder (otel_ingest/decode/_native.c, and _jsonpb.c, its OTLP/JSON
front end) with the machine's C compiler.

The compiled decoder is optional. If there is no compiler, no Python headers or the build
fails for any other reason, the hook says so and the install goes on: the server then uses
the Python decoder and logs that once at start-up (docs/decoder.md). Nothing is downloaded.

Environment: ``CC`` picks the compiler (default: the one Python was built with, else ``cc``);
``OTEL_INGEST_NATIVE=0`` skips the build; ``OTEL_INGEST_NATIVE_CFLAGS`` adds flags (the
sanitizer build of ``fuzz/run.py`` uses it).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("otel_ingest") / "decode" / "_native.c"
SOURCES = (SOURCE, SOURCE.with_name("_jsonpb.c"))  # one extension module each
FLAGS = ["-O3", "-fPIC", "-shared", "-std=c11", "-Wall", "-Wno-unused-parameter", "-fno-strict-aliasing"]


def compile_native(root: Path, out_dir: Path, source: Path = SOURCE) -> Path | None:
    """The compiled module's path in ``out_dir``, or None (with a warning) when it cannot be built."""
    if os.environ.get("OTEL_INGEST_NATIVE", "1") == "0":
        print("otel-ingest: OTEL_INGEST_NATIVE=0, not building the native decoder.", file=sys.stderr)
        return None
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        compiler = ["cc"]
    include = sysconfig.get_paths()["include"]
    target = out_dir / f"{source.stem}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
    extra = shlex.split(os.environ.get("OTEL_INGEST_NATIVE_CFLAGS", ""))
    command = [*compiler, *FLAGS, *extra, f"-I{include}", str(root / source), "-o", str(target), "-lm"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        result = None
        reason = str(exc)
    else:
        reason = result.stderr.strip()[-2000:]
    if result is None or result.returncode != 0 or not target.exists():
        print(
            f"otel-ingest: WARNING: the native decoder ({source.name}) was not built ({reason or 'compiler failed'}); "
            "the Python decoder will be used. Install a C compiler and the Python headers "
            "(Debian: gcc python3-dev) and reinstall for the fast path.",
            file=sys.stderr,
        )
        return None
    return target


class NativeDecoderHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        if version == "editable":
            # Editable installs import the package from the source tree: build it there.
            package = root / SOURCE.parent
            for source in SOURCES:
                for stale in package.glob(f"{source.stem}.*.so"):
                    stale.unlink()
                compile_native(root, package, source)
            return
        self._tmp = tempfile.mkdtemp(prefix="otel-ingest-native-")
        for source in SOURCES:
            built = compile_native(root, Path(self._tmp), source)
            if built is not None:
                build_data["force_include"][str(built)] = str(SOURCE.parent / built.name)
                build_data["pure_python"] = False
                build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
