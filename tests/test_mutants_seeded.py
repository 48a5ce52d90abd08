"""tools/mutate.py --seeded (run by CI) puts issue 10's bugs back by replacing a piece of
the correct code; this fails as soon as a change elsewhere makes a piece disappear, so the
list is updated with the change rather than discovered broken at the end of a CI run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutate", ROOT / "tools" / "mutate.py")
assert _spec and _spec.loader
mutate = importlib.util.module_from_spec(_spec)
sys.modules["mutate"] = mutate  # its dataclasses look themselves up there
_spec.loader.exec_module(mutate)


@pytest.mark.parametrize(
    ("title", "module", "correct", "bug", "tests"), mutate.SEEDED, ids=[s[0] for s in mutate.SEEDED]
)
def test_each_seeded_bug_still_applies_to_the_code(
    title: str, module: str, correct: str, bug: str, tests: list[str]
) -> None:
    source = (ROOT / module).read_text(encoding="utf-8")
    assert source.count(correct) == 1, f"update tools/mutate.py SEEDED: {title!r} no longer matches {module} once"
    assert (ROOT / tests[0]).exists()
    compile(source.replace(correct, bug), module, "exec")  # the bug is still valid Python
