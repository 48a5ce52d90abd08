"""What a principal of the shared token file may do through the gateway.

A principal gets gateway access with a ``[principals.gateway]`` table::

    [[principals]]
    name = "alice"
    token_sha256 = "…"
    tables = []                                 # ingestion grants, unchanged
    [principals.gateway]
    endpoints = ["claude-*", "gpt-5-codex"]     # endpoint names (glob patterns)
    requests_per_minute = 60                    # optional limits, for this principal alone
    tokens_per_minute = 200_000                 # also input_/output_tokens_per_minute
    usd_per_day = 20
    usd_per_month = 300

A principal without the table may use no endpoint (403). Every grant is checked when the
token file is loaded (``check_grants``): a pattern that is malformed or names no endpoint of
the gateway's config refuses the file, at start-up and on reload, as a bad ingestion grant does.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_ingest.auth import Principal, TokenFileError
from otel_ingest.gateway.config import LIMIT_KEYS, Endpoint, GatewayConfigError, Limits, parse_limits

# A glob over endpoint names: name characters, * and ?, and closed [...] sets.
_GLOB = re.compile(r"(?:[A-Za-z0-9._:/@+-]|\*|\?|\[!?[^\[\]]+\])+")


@dataclass(frozen=True)
class Grant:
    endpoints: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    error: str | None = None  # why the table could not be used (the principal then gets nothing)

    def allows(self, endpoint: str) -> bool:
        return self.error is None and any(fnmatch.fnmatchcase(endpoint, pattern) for pattern in self.endpoints)


NO_GRANT = Grant()
# Without a token file every caller is ``anonymous`` (loopback only): it may use everything.
ANONYMOUS_GRANT = Grant(endpoints=("*",))


def parse_grant(principal: Principal) -> Grant:
    table: dict[str, Any] | None = principal.gateway
    if table is None:
        return NO_GRANT
    where = f"principal {principal.name!r}: [principals.gateway]"
    try:
        endpoints = table.get("endpoints")
        if not isinstance(endpoints, list) or not all(isinstance(e, str) and e for e in endpoints):
            raise GatewayConfigError(f"{where}: endpoints must be a list of endpoint names or patterns.")
        unknown = set(table) - {"endpoints", *LIMIT_KEYS}
        if unknown:
            raise GatewayConfigError(f"{where}: unknown keys {sorted(unknown)}.")
        return Grant(endpoints=tuple(endpoints), limits=parse_limits(where, table))
    except GatewayConfigError as error:
        return Grant(error=str(error))


def _pattern_problem(pattern: str, names: list[str]) -> str | None:
    """Why ``pattern`` cannot be a grant of these endpoints, or None."""
    if pattern in names:
        return None
    if not _GLOB.fullmatch(pattern):
        return (
            "is not an endpoint name or glob pattern (letters, digits, . _ - : / @ +, "
            "with * ? and closed [...] sets; no spaces)"
        )
    if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
        return "names no endpoint of the gateway config"
    return None


def check_grants(principals: Iterable[Principal], endpoints: Iterable[Endpoint], path: str = "token file") -> None:
    """Raise TokenFileError naming the first ``[principals.gateway]`` table that is malformed
    or grants an endpoint the gateway does not have (a typo would silently grant nothing)."""
    names = [endpoint.name for endpoint in endpoints]
    for principal in principals:
        if principal.gateway is None:
            continue
        grant = parse_grant(principal)
        if grant.error:
            raise TokenFileError(f"{path}: {grant.error}")
        for pattern in grant.endpoints:
            problem = _pattern_problem(pattern, names)
            if problem:
                raise TokenFileError(
                    f"{path}: principal {principal.name!r}: [principals.gateway] endpoints: {pattern!r} {problem}; "
                    f"the endpoints are {', '.join(names)}."
                )


class Grants:
    """Parsed grants, cached per principal object (a token file reload makes new ones)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Principal, Grant]] = {}

    def of(self, principal: Principal) -> Grant:
        if principal.name == "anonymous" and not principal.token_sha256:
            return ANONYMOUS_GRANT
        cached = self._cache.get(id(principal))
        if cached is not None and cached[0] is principal:
            return cached[1]
        grant = parse_grant(principal)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[id(principal)] = (principal, grant)
        return grant
