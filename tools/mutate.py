"""Mutation testing for otel-ingest: does the suite notice a small bug?

Each mutant is the module with one small change made on its syntax tree (``<`` for
``<=``, ``and`` for ``or``, a constant off by one, a call statement deleted, ``min`` for
``max``...). A mutant is *killed* when the chosen tests fail (or time out) with it in
place, and *survives* when they pass: then either a test is missing or the change
does not alter behaviour (an equivalent mutant; docs/testing.md lists them).

The work happens in a copy of the project in a temporary folder, so the working tree
is never touched and the tests (and the servers they start) import the mutant.

    python tools/mutate.py otel_ingest/budget.py -t tests/test_mutants_budget.py
    python tools/mutate.py otel_ingest/wire.py -t tests/test_mutants_wire.py --function read_body
    python tools/mutate.py otel_ingest/wire.py -t ... --list          # the mutants, without running
    python tools/mutate.py otel_ingest/wire.py -t ... --only 12,40    # just these
    python tools/mutate.py otel_ingest/writer.py -t tests/test_exactly_once_local.py -k lost  # pytest's -k
    python tools/mutate.py --seeded                                   # issue 10's seeded bugs
    python tools/mutate.py --sweep writer-commit                      # a recorded sweep (SWEEPS)

Exit status: 0 when no mutant survived, 1 otherwise, 2 when the tests fail unmutated.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("otel_ingest", "tests", "schemas", "pyproject.toml")

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.Mod: ast.Mult,
}
_CALL_SWAPS = {"min": "max", "max": "min", "any": "all", "all": "any", "reversed": "", "sorted": ""}
# Statements that only report (logs, metrics) are not what this is about.
_QUIET_ROOTS = {"log", "access_log", "logging", "warnings"}


@dataclass(frozen=True)
class Mutant:
    id: int
    line: int
    function: str
    description: str
    site: str = ""  # the source line, stripped, with `⟨` before the changed node (stable across edits)
    before: str = ""  # the line above it, stripped

    @property
    def key(self) -> tuple[str, str, str]:
        """What EQUIVALENT lists: the site, the line above it, the change."""
        return (self.site, self.before, self.description)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | survived | timeout
    seconds: float


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_quiet_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    root = _root_name(node.func)
    text = ast.unparse(node.func)
    return root in _QUIET_ROOTS or ".monitoring." in f".{text}" or text.startswith("monitoring.")


class _Sites(ast.NodeVisitor):
    """Finds every mutation site, in a fixed order; ``apply`` makes the n-th change."""

    def __init__(self, function_filter: str | None) -> None:
        self.function_filter = function_filter
        self.scope: list[str] = []
        self.sites: list[tuple[ast.AST, str, int, str]] = []  # node, kind, variant, description

    def _in_scope(self) -> bool:
        if not self.function_filter:
            return True
        wanted = self.function_filter.split(",")
        if not self.scope:  # module level: constants
            return "<module>" in wanted
        return any(part in self.scope for part in wanted)

    def _add(self, node: ast.AST, kind: str, variant: int, description: str) -> None:
        if self._in_scope():
            self.sites.append((node, kind, variant, description))

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        for statement in node.body:
            self.visit(statement)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        pass  # messages

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) or _is_quiet_call(node.value):
            return
        if isinstance(node.value, (ast.Call, ast.Await)):
            self._add(node, "delete", 0, f"delete `{ast.unparse(node)[:60]}`")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._add(node, "delete", 0, f"delete `{ast.unparse(node)[:60]}`")
        swap = _BINOP_SWAPS.get(type(node.op))
        if swap:
            self._add(node, "augop", 0, f"`{_op(node.op)}=` → `{_op(swap())}=` in `{ast.unparse(node)[:60]}`")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            swap = _COMPARE_SWAPS.get(type(op))
            if swap:
                self._add(node, "compare", index, f"`{_op(op)}` → `{_op(swap())}` in `{ast.unparse(node)[:60]}`")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = "or" if isinstance(node.op, ast.And) else "and"
        self._add(node, "boolop", 0, f"`{_op(node.op)}` → `{other}` in `{ast.unparse(node)[:60]}`")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._add(node, "not", 0, f"drop `not` in `{ast.unparse(node)[:60]}`")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BINOP_SWAPS.get(type(node.op))
        if swap:
            self._add(node, "binop", 0, f"`{_op(node.op)}` → `{_op(swap())}` in `{ast.unparse(node)[:60]}`")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, bool):
            self._add(node, "const", 0, f"`{node.value}` → `{not node.value}`")
        elif isinstance(node.value, (int, float)):
            self._add(node, "const", 0, f"`{node.value!r}` → `{node.value + 1!r}`")

    def visit_Call(self, node: ast.Call) -> None:
        if _is_quiet_call(node):
            return
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name in _CALL_SWAPS:
            swap = _CALL_SWAPS[name]
            self._add(node, "call", 0, f"`{name}(...)` → `{swap + '(...)' if swap else 'its argument'}`")
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        self._add(node, "if", 0, f"`if {ast.unparse(node.test)[:50]}` → `if False`")
        self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        pass  # the raised error's text is a message; whether it is raised is mutated by `if`

    def visit_Return(self, node: ast.Return) -> None:
        # A row built as a returned tuple (flatten/): two neighbouring values swapped, the
        # audit's "trace and span ids swapped" kind of bug.
        if isinstance(node.value, ast.Tuple):
            self._swaps(node.value, node.value.elts)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        self._swaps(node, node.values)
        self.generic_visit(node)

    def _swaps(self, node: ast.AST, items: list[ast.expr]) -> None:
        for index in range(len(items) - 1):
            first, second = (ast.unparse(item) for item in items[index : index + 2])
            if first == second:
                continue  # the same code either way
            first, second = first[:25], second[:25]
            self._add(node, "swap", index, f"swap `{first}` and `{second}`")


def _op(op: ast.AST) -> str:
    symbols = {
        ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
        ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or", ast.Add: "+",
        ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/", ast.LShift: "<<", ast.RShift: ">>",
        ast.BitOr: "|", ast.BitAnd: "&", ast.Mod: "%",
    }  # fmt: skip
    return symbols[type(op)]


def _mutate(node: ast.AST, kind: str, variant: int) -> ast.AST:
    """The replacement for ``node`` (a copy, changed)."""
    if kind == "delete":
        return ast.copy_location(ast.Pass(), node)
    if kind == "compare":
        assert isinstance(node, ast.Compare)
        node.ops[variant] = _COMPARE_SWAPS[type(node.ops[variant])]()
    elif kind == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "not":
        assert isinstance(node, ast.UnaryOp)
        return node.operand
    elif kind in ("binop", "augop"):
        assert isinstance(node, (ast.BinOp, ast.AugAssign))
        node.op = _BINOP_SWAPS[type(node.op)]()
    elif kind == "const":
        assert isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float))
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif kind == "call":
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        swap = _CALL_SWAPS[node.func.id]
        if not swap:
            return node.args[0]
        node.func.id = swap
    elif kind == "swap":
        assert isinstance(node, (ast.Tuple, ast.Dict))
        items = node.elts if isinstance(node, ast.Tuple) else node.values
        items[variant], items[variant + 1] = items[variant + 1], items[variant]
    elif kind == "if":
        assert isinstance(node, ast.If)
        node.test = ast.copy_location(ast.Constant(False), node.test)
    return node


def mutants(source: str, function_filter: str | None) -> Iterator[tuple[Mutant, str]]:
    """Every mutant of ``source`` with its mutated source text."""
    tree = ast.parse(source)
    lines = source.splitlines()
    sites = _Sites(function_filter)
    sites.visit(tree)
    scopes: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                scopes.setdefault(id(child), node.name)
    for number, (node, kind, variant, description) in enumerate(sites.sites, 1):
        line = getattr(node, "lineno", 0)
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        column = getattr(node, "col_offset", 0)
        site = (text[:column] + "⟨" + text[column:]).strip()
        before = next((lines[i].strip() for i in range(line - 2, -1, -1) if lines[i].strip()), "")
        mutant = Mutant(number, line, scopes.get(id(node), "<module>"), description, site, before)
        yield mutant, _apply(tree, node, _mutate(copy.deepcopy(node), kind, variant))


def _apply(tree: ast.AST, target: ast.AST, replacement: ast.AST) -> str:
    """Source of ``tree`` with ``target`` swapped for ``replacement`` (tree left unchanged)."""
    parent_field: tuple[ast.AST, str, int | None] | None = None
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is target:
                parent_field = (parent, name, None)
            elif isinstance(value, list) and any(item is target for item in value):
                parent_field = (parent, name, next(i for i, item in enumerate(value) if item is target))
        if parent_field:
            break
    assert parent_field, "mutation site not found"
    parent, name, index = parent_field
    if index is None:
        setattr(parent, name, replacement)
        try:
            return ast.unparse(ast.fix_missing_locations(tree))
        finally:
            setattr(parent, name, target)
    items = getattr(parent, name)
    items[index] = replacement
    try:
        return ast.unparse(ast.fix_missing_locations(tree))
    finally:
        items[index] = target


class Sandbox:
    """A copy of the project in a temporary folder; ``run`` runs pytest there."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="otel-ingest-mutants-"))
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, self.folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, self.folder / name)

    def write(self, module: str, text: str) -> None:
        (self.folder / module).write_text(text, encoding="utf-8")

    def run(self, tests: list[str], timeout: float, extra_env: dict[str, str] | None = None) -> tuple[str, float, str]:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(self.folder), **(extra_env or {})}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=self.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # the tests' own servers too
            process.communicate()
            return "timeout", time.monotonic() - started, ""
        text = output.decode(errors="replace")
        # pytest's 5: no test was selected, which must not pass for a kill.
        status = {0: "survived", 5: "no tests"}.get(process.returncode, "killed")
        return status, time.monotonic() - started, text

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# Issue 10's seeded bugs: (title, module, the correct text, the bug, the pytest arguments of the
# test that must catch it). `--seeded` checks that each is still caught (CI runs it).
SEEDED: list[tuple[str, str, str, str, list[str]]] = [
    (
        "grants matched by prefix, not fnmatch",
        "otel_ingest/auth.py",
        "fnmatch.fnmatchcase(name, pattern)",
        'name.startswith(pattern.rstrip("*"))',
        ["tests/test_mutants_auth.py", "-k", "glob"],
    ),
    (
        "codings undone in the order listed",
        "otel_ingest/wire.py",
        "for coding in reversed(codings):",
        "for coding in codings:",
        ["tests/test_mutants_wire.py", "-k", "reverse"],
    ),
    (
        "zstd limit doubled",
        "otel_ingest/wire.py",
        'if size > limit:\n            raise _too_large(limit, "after decompression")\n        if decompressor',
        'if size > 2 * limit:\n            raise _too_large(limit, "after decompression")\n        if decompressor',
        ["tests/test_mutants_wire.py", "-k", "exactly_at_the_limit"],
    ),
    (
        "Content-Length not checked against the buffer budget",
        "otel_ingest/wire.py",
        "        reservation.check(int(content_length))\n",
        "",
        ["tests/test_mutants_wire.py", "-k", "announced"],
    ),
    (
        "a closing writer drops what is queued",
        "otel_ingest/writer.py",
        "        while not self._queue:\n            if self._closing:",
        "        while not self._queue or self._closing:\n            if self._closing:",
        ["tests/test_mutants_writer.py", "-k", "close_during"],
    ),
    (
        "_take ignores max_rows/max_bytes",
        "otel_ingest/writer.py",
        "            if taken and (rows + count > self.policy.max_rows or size + head.size > self.policy.max_bytes):",
        "            if False:",
        ["tests/test_mutants_writer.py", "-k", "never_holds"],
    ),
    (
        "retry without asking whether the failed commit landed",
        "otel_ingest/writer.py",
        "if attempt > 1 and self._committed(sequence):",
        "if False:",
        ["tests/test_exactly_once.py", "-k", "lost_is_stored_once and 403"],
    ),
    (
        "no check after the last failed attempt",
        "otel_ingest/writer.py",
        "if self._committed(sequence):  # the error came after the commit landed",
        "if False:",
        ["tests/test_exactly_once.py", "-k", "landing_on_the_final"],
    ),
    (
        "rate-limit state reset on every token-file reload",
        "otel_ingest/auth.py",
        "principal.requests, principal.bytes = previous.requests, previous.bytes",
        "pass",
        ["tests/test_mutants_auth.py", "-k", "survives"],
    ),
    (
        "the table object never reopened every 100 versions",
        "otel_ingest/writer.py",
        "        if table.version() - opened_at < REOPEN_EVERY:\n            return table",
        "        if True:\n            return table",
        ["tests/test_mutants_writer.py", "-k", "reopened"],
    ),
]


# The sweeps recorded in docs/testing.md: (module, functions mutated or None for all, the
# fastest tests that kill its mutants). `--sweep NAME` runs one; `--sweep all` every one.
SWEEPS: dict[str, tuple[str, str | None, list[str]]] = {
    "budget": ("otel_ingest/budget.py", None, ["tests/test_mutants_budget.py"]),
    "wire": ("otel_ingest/wire.py", None, ["tests/test_mutants_wire.py"]),
    "auth": ("otel_ingest/auth.py", None, ["tests/test_mutants_auth.py"]),
    "writer-queue": (
        "otel_ingest/writer.py",
        "submit,withdraw,close,_full,_wait_for_work,_take,_run,fresh_table",
        ["tests/test_mutants_writer.py", "tests/test_mutants_handoff.py", "tests/test_exactly_once_local.py"],
    ),
    "writer-commit": (
        "otel_ingest/writer.py",
        "_commit,_committed,_landed_version,_adapt",
        [
            "tests/test_exactly_once_local.py",
            # The transactions a commit records (one per id, its highest number), and the
            # reopened table object taken up by the writer (1 s together).
            "tests/test_mutants_writer.py::test_a_commit_holding_two_hand_offs_of_one_connection_records_the_later",
            "tests/test_mutants_writer.py::test_the_writer_commits_through_the_reopened_table",
        ],
    ),
    # After the hand-offs (--workers N): the rest of writer.py, and handoff.py.
    "writer-handoff": (
        "otel_ingest/writer.py",
        "_settle,_commit_here,_hand_off,_await_owner",
        ["tests/test_mutants_handoff.py", "tests/test_mutants_writer.py"],
    ),
    "writer-tables": (
        "otel_ingest/writer.py",
        "<module>,CommitPolicy,_Opening,__init__,_table_writer,_open,check,append",
        ["tests/test_mutants_writer.py", "tests/test_mutants_handoff.py", "tests/test_exactly_once_local.py"],
    ),
    "handoff": ("otel_ingest/handoff.py", None, ["tests/test_mutants_handoff.py"]),
    "flatten-common": ("otel_ingest/flatten/common.py", None, ["tests/test_mutants_flatten.py"]),
    "flatten-metrics": ("otel_ingest/flatten/metrics.py", None, ["tests/test_mutants_flatten.py"]),
    # logs.py and traces.py are rows built as tuples and dicts: only the swap operator applies.
    "flatten-logs": ("otel_ingest/flatten/logs.py", None, ["tests/test_mutants_flatten.py"]),
    "flatten-traces": ("otel_ingest/flatten/traces.py", None, ["tests/test_mutants_flatten.py"]),
    # CI runs this one (about two minutes): the exactly-once checks of the commit path.
    "ci": (
        "otel_ingest/writer.py",
        "_committed,_landed_version",
        ["tests/test_exactly_once_local.py", "-k", "lost or unreadable or outage or refused or buried"],
    ),
}

# Survivors explained as equivalent in docs/testing.md, by module and Mutant.key (the
# changed line, the line above it, the change; `--list` marks them): reported as
# EQUIVALENT, and not counted as survivors.
EQUIVALENT: dict[str, set[tuple[str, str, str]]] = {
    "otel_ingest/writer.py": {
        # Tuning constants: every documented promise holds for any value near this one; the
        # value is a measured trade-off of speed or size (docs/testing.md, "Tuning constants").
        # How many times a lost create/compaction race is retried before the slower retries.
        (
            "RACE_RETRIES = ⟨50",
            "# table (6 replicas round-robin) ran out of 15 and fell back to the slower retries below.",
            "`50` → `51`",
        ),
        # How often the table object is reopened (the tests import the constant).
        (
            "REOPEN_EVERY = ⟨100",
            "# checkpoint (written every 100 versions). Measured in bench/versions.py.",
            "`100` → `101`",
        ),
        # How far back a landed commit is looked for (the tests import the constant).
        ("LANDED_LOOKBACK = ⟨50", 'COMMIT_METADATA_KEY = "otelIngestCommit"', "`50` → `51`"),
        # zstd level and row-group size of commit and compaction files: size and speed only.
        ("compression_level=⟨3,", 'compression="ZSTD",', "`3` → `4`"),
        ("max_row_group_size=⟨128 * 1024,", "compression_level=3,", "`128` → `129`"),
        ("max_row_group_size=128 * ⟨1024,", "compression_level=3,", "`1024` → `1025`"),
        # Group-commit limits' defaults (the tests set their own limits).
        ("max_rows: int = ⟨200_000", 'this writer\'s (see ``TableWriter._adapt``)."""', "`200000` → `200001`"),
        ("max_bytes: int = ⟨64 << 20", "max_rows: int = 200_000", "`64` → `65`"),
        ("max_bytes: int = 64 << ⟨20", "max_rows: int = 200_000", "`20` → `21`"),
        # time.monotonic() is far past 1 s: an idle table's first commit goes at once either way.
        ("self._last_commit = ⟨0.0", "self._sequence = 0", "`0.0` → `1.0`"),
        # The fast path for an open table: without it the same writer is found under the lock.
        ("⟨if writer is not None:", "writer = self._tables.get(key)", "`if writer is not None` → `if False`"),
        # A batch (de)serialized on the event loop or in a thread: the same bytes (a speed choice).
        (
            "⟨if sum(p.size for p in group) < INLINE_BYTES:  # see handoff.INLINE_BYTES",
            "parts = [p.rows for p in group]",
            "`if sum((p.size for p in group)) < INLINE_BYTES` → `if False`",
        ),
        (
            "if ⟨sum(p.size for p in group) < INLINE_BYTES:  # see handoff.INLINE_BYTES",
            "parts = [p.rows for p in group]",
            "`<` → `<=` in `sum((p.size for p in group)) < INLINE_BYTES`",
        ),
        # The retry loops always end at their last attempt: a higher bound, or what follows, is never reached.
        (
            "for attempt in range(1, COMMIT_ATTEMPTS + ⟨1):",
            'So reading is retried like a commit; only if it never succeeds is it a "no"."""',
            "`1` → `2`",
        ),
        (
            "return ⟨False",
            "time.sleep(RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random()))",
            "`False` → `True`",
        ),
        ("for attempt in range(1, COMMIT_ATTEMPTS + ⟨1):", "read_version = self.table.version()", "`1` → `2`"),
        ("version = -⟨1", ")", "`1` → `2`"),
        # asyncio.wait_for with a timeout <= 0 raises TimeoutError at once, which breaks the loop too.
        ("⟨if remaining <= 0:", "remaining = deadline - time.monotonic()", "`if remaining <= 0` → `if False`"),
        ("if ⟨remaining <= 0:", "remaining = deadline - time.monotonic()", "`<=` → `<` in `remaining <= 0`"),
        # A commit's version is never 0 (version 0 creates the table).
        (
            "return version, max(0, version - read_version - 1) if ⟨version >= 0 else 0",
            ")",
            "`>=` → `>` in `version >= 0`",
        ),
        ("return version, max(0, version - read_version - 1) if version >= ⟨0 else 0", ")", "`0` → `1`"),
        # Fifth round (resend hand-offs). An import for annotations only (postponed by
        # `from __future__ import annotations`).
        (
            "⟨if TYPE_CHECKING:",
            "from otel_ingest.tables import TableName, Warehouse",
            "`if TYPE_CHECKING` → `if False`",
        ),
        # A released request's size (BatchColumns.repeated_bytes) is never read again.
        (
            "RELEASED = BatchColumns(pa.RecordBatch.from_pylist([]), ⟨0)",
            "# The rows of a request once its commit is over (see TableWriter._settle).",
            "`0` → `1`",
        ),
        # When _take reaches a resend, every request queued before it is in this commit or
        # done (the owner settles a commit before it takes the next; withdrawn = cancelled).
        (
            "head.rides = ⟨not first.done.done() and first in taken",
            "continue",
            "`and` → `or` in `not first.done.done() and first in taken`",
        ),
        # The owner answers a hand-off with one outcome per part, or one error for all.
        ("for pending, each in zip(group, await answer, strict=⟨True):", "try:", "`True` → `False`"),
    },
    "otel_ingest/auth.py": {
        # At equality both return 0 (the formula below gives 0 too).
        ("if ⟨self.tokens >= needed:", "needed = min(amount, self.capacity)", "`>=` → `>` in `self.tokens >= needed`"),
        # A regular file reads the same in blocking and non-blocking mode.
        (
            "⟨os.set_blocking(fd, True)",
            'raise TokenFileError(f"Token file {path} is not a regular file.")',
            "delete `os.set_blocking(fd, True)`",
        ),
        (
            "os.set_blocking(fd, ⟨True)",
            'raise TokenFileError(f"Token file {path} is not a regular file.")',
            "`True` → `False`",
        ),
        # Only what repr() shows (a principal's rate-limit buckets); nothing parses it.
        (
            "requests: TokenBucket | None = field(default=None, repr=⟨False)",
            "burst_seconds: float = DEFAULT_BURST_SECONDS",
            "`False` → `True`",
        ),
        (
            "bytes: TokenBucket | None = field(default=None, repr=⟨False)",
            "requests: TokenBucket | None = field(default=None, repr=False)",
            "`False` → `True`",
        ),
    },
    "otel_ingest/wire.py": {
        # Tuning: inflation rounds of 2 MiB instead of 1 (the bound is "the limit plus one
        # round"; the bomb test's tracemalloc bound has room for it), and a slightly higher
        # zstd ratio cap (smaller zstd input pieces: more rounds, the same output).
        ("_CHUNK_OUT = ⟨1 << 20", "}", "`1` → `2`"),
        ("_CHUNK_OUT = 1 << ⟨20", "}", "`20` → `21`"),
        (
            "_ZSTD_MAX_RATIO = ⟨32 * 1024",
            "# At most this many output bytes per input byte: an RLE block of 4 bytes gives 128 KiB.",
            "`32` → `33`",
        ),
        (
            "_ZSTD_MAX_RATIO = 32 * ⟨1024",
            "# At most this many output bytes per input byte: an RLE block of 4 bytes gives 128 KiB.",
            "`1024` → `1025`",
        ),
        # One more byte may be inflated before the 413; or each round up to the megabyte
        # the bound allows anyway ("the limit plus a megabyte").
        (
            "chunk = decompressor.decompress(pending, min(_CHUNK_OUT, ⟨limit + 1 - len(out)))",
            "# A megabyte at a time: a bomb costs the limit in memory, not twice the limit.",
            "`-` → `+` in `limit + 1 - len(out)`",
        ),
        (
            "chunk = decompressor.decompress(pending, min(_CHUNK_OUT, limit + ⟨1 - len(out)))",
            "# A megabyte at a time: a bomb costs the limit in memory, not twice the limit.",
            "`1` → `2`",
        ),
        # Both raise "truncated" for a truncated stream, the mutant one round earlier.
        (
            "elif ⟨not pending and not chunk:",
            "decompressor = zlib.decompressobj(wbits)",
            "`and` → `or` in `not pending and (not chunk)`",
        ),
        # 17 + MAX_WBITS = 32: zlib's automatic header detection (a zlib stream labelled gzip passes too).
        (
            "return _inflate(data, limit, ⟨16 + zlib.MAX_WBITS)",
            "def _gunzip(data: bytes, limit: int) -> bytes:",
            "`16` → `17`",
        ),
        # Smaller zstd input pieces: the same output, in more rounds (safer, slower).
        (
            "step = ⟨max(64, (limit + _CHUNK_OUT - size) // _ZSTD_MAX_RATIO)",
            "while position < len(data):",
            "`max(...)` → `min(...)`",
        ),
        (
            "step = max(⟨64, (limit + _CHUNK_OUT - size) // _ZSTD_MAX_RATIO)",
            "while position < len(data):",
            "`64` → `65`",
        ),
        # The text before the first ";" is the same however many times the rest is split.
        (
            'essence = (content_type or "").split(";", ⟨1)[0].strip().lower()',
            '"""The body encoding named by a Content-Type header (parameters ignored)."""',
            "`1` → `2`",
        ),
    },
    "otel_ingest/handoff.py": {
        # Where a batch is (de)serialized, on the event loop or in a thread: the same bytes.
        *(
            (site, "# than the work (a worker's CPU per record grew ~25% with three hops per hand-off).", change)
            for site, change in [
                ("INLINE_BYTES = ⟨1 << 20", "`<<` → `>>` in `1 << 20`"),
                ("INLINE_BYTES = ⟨1 << 20", "`1` → `2`"),
                ("INLINE_BYTES = 1 << ⟨20", "`20` → `21`"),
            ]
        ),
        (
            "small = ⟨len(payload) < INLINE_BYTES",
            "payload = await _read_frame(reader)",
            "`<` → `<=` in `len(payload) < INLINE_BYTES`",
        ),
        (
            "small = ⟨batch.nbytes < INLINE_BYTES",
            'Raises ``OwnerUnreachable`` when there is no connection and none can be made."""',
            "`<` → `<=` in `batch.nbytes < INLINE_BYTES`",
        ),
        # asyncio's create_unix_server removes a stale socket file itself before binding.
        (
            "⟨path.unlink(missing_ok=True)  # left by this slot's previous owner, which died",
            "path = self._socket(self.slot)",
            "delete `path.unlink(missing_ok=True)`",
        ),
        # The connection ends when the sender closed it (or it broke): nobody reads the answers
        # still to come, whether or not the owner waits to write them before closing.
        ("⟨await replying", "answers.put_nowait(None)", "delete `await replying`"),
        # The lost connection's message only reaches the log ("... was lost (...)").
        (
            "pending.popleft().set_exception(OwnerLost(⟨str(exc) or type(exc).__name__))",
            "while pending:",
            "`or` → `and` in `str(exc) or type(exc).__name__`",
        ),
        # drain() only waits while the socket's buffer is full: answers are a few bytes each.
        (
            "⟨await writer.drain()",
            "writer.write(_frame(json.dumps(_answer(done)).encode()))",
            "delete `await writer.drain()`",
        ),
    },
    "otel_ingest/flatten/metrics.py": {
        # Set with the metadata at the metric's first data point, before any row is appended.
        ("repeated = ⟨0", "metadata = None", "`0` → `1`"),
    },
    "otel_ingest/flatten/common.py": {
        # Only ±infinity reaches this line.
        ('return "Infinity" if ⟨value > 0 else "-Infinity"', "if math.isinf(value):", "`>` → `>=` in `value > 0`"),
        ('return "Infinity" if value > ⟨0 else "-Infinity"', "if math.isinf(value):", "`0` → `1`"),
        # Fast paths: without them a bool or an int goes through json.dumps, which writes the same text.
        ('⟨if kind == "bool_value":', "return None", "`if kind == 'bool_value'` → `if False`"),
        (
            '⟨if kind == "int_value":',
            'return "true" if value.bool_value else "false"',
            "`if kind == 'int_value'` → `if False`",
        ),
        # The hot path for strings: any_value_text returns a string value as it is too.
        (
            '⟨if value.WhichOneof("value") == "string_value":',
            "# Most attribute values are strings: skip the general conversion for them (hot path).",
            "`if value.WhichOneof('value') == 'string_value'` → `if False`",
        ),
        # Names and values always have the same length (each flattener's _ROW and its row tuple).
        ("for name, value in zip(names, row, strict=⟨False):", "values = self.values", "`False` → `True`"),
        (
            "for name, position in zip(self.shared, self._current, strict=⟨False):",
            "values[name].append(value)",
            "`False` → `True`",
        ),
        # Merging consecutive Python-built parts before converting them is a speed-up: each
        # part converted alone, then concatenated, gives the same rows in the same order.
        (
            "⟨if part is not None and not isinstance(part, BatchColumns):",
            "for part in [*parts, None]:",
            "`if part is not None and (not isinstance(part, BatchCo` → `if False`",
        ),
        (
            "if ⟨part is not None and not isinstance(part, BatchColumns):",
            "for part in [*parts, None]:",
            "`is not` → `is` in `part is not None`",
        ),
        # A single part converted through a merged copy gives the same rows (the copy is what is saved).
        ("⟨if len(run) == 1:", "continue", "`if len(run) == 1` → `if False`"),
        # Every part of a run (two or more) has the same schema and scope column.
        ("merged = cls(run[⟨0].schema, run[0].shared[3])", "elif run:", "`0` → `1`"),
        ("merged = cls(run[0].schema, run[⟨0].shared[3])", "elif run:", "`0` → `1`"),
        # Every Flattened is built with its rejected count; the default is never used.
        ("rejected: int = ⟨0", "columns: Columns", "`0` → `1`"),
        # Set by enter_resource/enter_scope before any row is appended (scoped() enters both first).
        *(
            (f"self._current = [{', '.join('⟨0' if i == n else '0' for i in range(4))}]", before, "`0` → `1`")
            for n, before in enumerate(["self.indices: dict[str, list[int]] = {name: [] for name in self.shared}"] * 4)
        ),
        *(
            (f"self._context_bytes = [{', '.join('⟨0' if i == n else '0' for i in range(2))}]", before, "`0` → `1`")
            for n, before in enumerate(
                ["# The copies' size is counted so that the request can be charged for it up front."] * 2
            )
        ),
    },
}


def _reason(output: str) -> str:
    """The first assertion or error line of a pytest run, to show why a mutant was killed."""
    lines = [line[2:].strip() for line in output.splitlines() if line.startswith("E ")]
    return lines[0][:100] if lines else "-"


def run_seeded(timeout: float, only: set[int] | None) -> int:
    chosen = [(n, bug) for n, bug in enumerate(SEEDED, 1) if not only or n in only]
    sandbox = Sandbox()
    survived = 0
    try:
        # Unmutated, the selected tests must pass (one run for all: each selection is
        # [file, "-k", expression]): a kill by a broken environment is no kill.
        files = sorted({tests[0] for _, (*_, tests) in chosen})
        expression = " or ".join(f"({tests[2]})" for _, (*_, tests) in chosen)
        status, seconds, output = sandbox.run([*files, "-k", expression], timeout)
        if status != "survived":
            print(f"The selected tests fail without any bug ({status}):\n{output[-3000:]}")
            return 2
        print(f"The selected tests pass unmutated ({seconds:.0f} s)", flush=True)
        for number, (title, module, correct, bug, tests) in chosen:
            original = (ROOT / module).read_text(encoding="utf-8")
            if original.count(correct) != 1:
                print(f"{number:2} {title}: the correct text is no longer in {module} once; update SEEDED")
                survived += 1
                continue
            sandbox.write(module, original.replace(correct, bug))
            status, seconds, output = sandbox.run(tests, timeout)
            sandbox.write(module, original)
            survived += status in ("survived", "no tests")
            print(f"{number:2} {status:8} {seconds:5.1f} s  {title}  ({module}; {' '.join(tests)})", flush=True)
            if status == "killed":
                print(f"   {_reason(output)}", flush=True)
    finally:
        sandbox.close()
    return 1 if survived else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", nargs="?", help="e.g. otel_ingest/wire.py")
    parser.add_argument("-t", "--tests", action="append", default=[], help="pytest arguments (repeatable)")
    parser.add_argument("-k", dest="keyword", help="pytest's -k expression, to run only the tests that kill fastest")
    parser.add_argument("--function", help="only mutate inside these functions/classes (comma-separated)")
    parser.add_argument("--only", help="only these mutant numbers (comma-separated)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--timeout", type=float, help="seconds per mutant [3× the unmutated run, at least 20]")
    parser.add_argument("--report", type=Path, help="write every outcome here as JSON")
    parser.add_argument("--seeded", action="store_true", help="run issue 10's seeded bugs instead")
    parser.add_argument("--sweep", choices=[*SWEEPS, "all"], help="run a recorded sweep (module, functions, tests)")
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(",")} if args.only else None
    if args.seeded:
        return run_seeded(args.timeout or 300, only)
    if args.sweep:
        status = 0
        for name in SWEEPS if args.sweep == "all" else [args.sweep]:
            module, functions, tests = SWEEPS[name]
            print(f"== sweep {name}: {module} ({functions or 'all'}) against {' '.join(tests)}", flush=True)
            report = args.report.with_name(f"{args.report.stem}-{name}.json") if args.report else None
            status = max(status, run_mutants(module, functions, tests, only, args.list, args.timeout, report))
        return status
    if not args.module or not args.tests:
        parser.error("give a module and -t tests (or --seeded, or --sweep)")
    tests = [*args.tests, *(["-k", args.keyword] if args.keyword else [])]
    return run_mutants(args.module, args.function, tests, only, args.list, args.timeout, args.report)


def run_mutants(
    module: str,
    functions: str | None,
    tests: list[str],
    only: set[int] | None,
    list_only: bool,
    timeout_seconds: float | None,
    report: Path | None,
) -> int:
    source = (ROOT / module).read_text(encoding="utf-8")
    found = list(mutants(source, functions))
    if list_only:
        for mutant, _ in found:
            known = " [equivalent]" if mutant.key in EQUIVALENT.get(module, set()) else ""
            print(
                f"{mutant.id:4} {module}:{mutant.line} {mutant.function}: {mutant.description}  @ {mutant.site}{known}"
            )
        return 0
    # The servers decode protobuf with the native decoder, which has its own flatteners in C
    # (docs/decoder.md): a mutant of flatten/ is seen by a server-level test only when the
    # server runs the Python path. (The in-process tests call the flatteners directly.)
    env = {"OTEL_INGEST_DECODER": "python"} if module.startswith("otel_ingest/flatten/") else {}
    sandbox = Sandbox()
    outcomes: list[Outcome] = []
    try:
        status, baseline, output = sandbox.run(tests, timeout_seconds or 600, env)
        if status != "survived":
            print(f"The tests fail without any mutant ({status}); fix them first.\n{output[-3000:]}")
            return 2
        if " skipped" in output and " passed" not in output:
            print(f"The tests skip here, so they can kill nothing:\n{output[-1000:]}")
            return 0
        timeout = timeout_seconds or max(20.0, 3 * baseline)
        print(f"{len(found)} mutants of {module}; unmutated tests pass in {baseline:.1f} s", flush=True)
        for mutant, text in found:
            if only and mutant.id not in only:
                continue
            sandbox.write(module, text)
            status, seconds, _ = sandbox.run(tests, timeout, env)
            if status == "survived" and mutant.key in EQUIVALENT.get(module, set()):
                status = "equivalent"
            outcomes.append(Outcome(mutant, status, seconds))
            if status == "no tests":
                print(f"The tests {tests} select nothing.")
                return 2
            print(
                f"{status.upper():8} {mutant.id:4} {module}:{mutant.line} {mutant.function}: {mutant.description}",
                flush=True,
            )
        sandbox.write(module, source)
    finally:
        sandbox.close()
    survivors = [o for o in outcomes if o.status == "survived"]
    equivalent = sum(o.status == "equivalent" for o in outcomes)
    killed = len(outcomes) - len(survivors) - equivalent
    print(f"{len(outcomes)} mutants run: {killed} killed, {equivalent} equivalent, {len(survivors)} survived")
    if report:
        report.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
