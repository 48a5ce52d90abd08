"""The gateway's configuration file (TOML): where it listens, where it logs, and its endpoints.

::

    [gateway]
    host = "127.0.0.1"
    port = 4000
    ops_host = "127.0.0.1"                    # /metrics and /healthz for operators, not on the public port
    ops_port = 9400                           # 0: no ops listener; = port: ops endpoints on the gateway port
    tokens = "tokens.toml"                    # the ingestion token file; principals get [principals.gateway]
    warehouse = "./warehouse"
    usage_table = "main.ai_gateway.usage"
    inference_table = "main.ai_gateway.inference"
    commit_every_seconds = 5                  # rows wait at most this long before their Delta commit
    redis_url = "redis://127.0.0.1:6379/0"    # optional: limits shared by every replica
    replicas = 1                              # without Redis, each replica enforces limit / replicas

    [[endpoints]]
    name = "claude-opus"                      # what grants and tables call it
    provider = "anthropic"                    # anthropic | openai | google | openai-compatible
    base_url = "https://api.anthropic.com"
    api_key_env = "ANTHROPIC_API_KEY"         # the name of the variable, never the key
    models = ["claude-opus-4-*"]              # model names clients may ask for (glob); default [name]
    requests_per_minute = 600                 # optional limits for everyone together
    [endpoints.inference]
    enabled = true
    sample_rate = 1.0
    max_bytes = 1_048_576
    [endpoints.prices]                        # optional USD per million tokens, over genai-prices
    input = 15.0
    output = 75.0
    cache_read = 1.5
    cache_write = 18.75

Keys live only in the environment of the gateway process: the file names the variable.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from otel_ingest.tables import TableName

Provider = Literal["anthropic", "openai", "google", "openai-compatible"]
PROVIDERS: tuple[Provider, ...] = ("anthropic", "openai", "google", "openai-compatible")

DEFAULT_PORT = 4000
DEFAULT_OPS_PORT = 9400
DEFAULT_MAX_BODY_BYTES = 32 << 20
DEFAULT_INFERENCE_MAX_BYTES = 1 << 20
DEFAULT_USAGE_TABLE = TableName("main", "ai_gateway", "usage")
DEFAULT_INFERENCE_TABLE = TableName("main", "ai_gateway", "inference")


class GatewayConfigError(ValueError):
    """The gateway configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Limits:
    """Limits for one principal or one endpoint; None means no limit."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    @property
    def any(self) -> bool:
        return any(value is not None for value in vars(self).values())


LIMIT_KEYS = tuple(Limits.__dataclass_fields__)


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, overriding genai-prices for one endpoint."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True)
class InferenceLogging:
    enabled: bool = True
    sample_rate: float = 1.0
    max_bytes: int = DEFAULT_INFERENCE_MAX_BYTES


@dataclass(frozen=True)
class Endpoint:
    name: str
    provider: Provider
    base_url: str
    api_key_env: str | None
    models: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)
    prices: Prices | None = None
    inference: InferenceLogging = field(default_factory=InferenceLogging)
    timeout_seconds: float = 600.0
    connect_timeout_seconds: float = 10.0

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def listed_models(self) -> list[str]:
        """Model ids shown by the model listings: concrete names, or the endpoint's name."""
        concrete = [m for m in self.models if not any(c in m for c in "*?[")]
        return concrete or [self.name]

    def api_key(self) -> str | None:
        """The key from the environment, read at call time (rotation needs no restart)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class GatewayConfig:
    endpoints: tuple[Endpoint, ...]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    ops_host: str = "127.0.0.1"
    ops_port: int = DEFAULT_OPS_PORT
    tokens: str | None = None
    warehouse: str = "./warehouse"
    storage_options: dict[str, str] = field(default_factory=dict)
    usage_table: TableName | None = None
    inference_table: TableName | None = None
    redis_url: str | None = None
    replicas: int = 1
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_buffer_rows: int = 10_000
    commit_every_seconds: float = 5.0
    tags_header: str = "x-gateway-tags"

    @property
    def ops_listener(self) -> str:
        """``separate``, ``shared`` (ops endpoints on the gateway port) or ``off``."""
        if self.ops_port == 0:
            return "off"
        return "shared" if self.ops_port == self.port else "separate"

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)


def _number(where: str, key: str, value: Any, minimum: float = 0.0) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= minimum:
        raise GatewayConfigError(f"{where}: {key} must be a number above {minimum:g}.")
    return float(value)


def parse_limits(where: str, table: dict[str, Any]) -> Limits:
    return Limits(**{key: _number(where, key, table[key]) for key in LIMIT_KEYS if key in table})


def _text(where: str, table: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise GatewayConfigError(f"{where}: {key} must be a non-empty string.")
    return value


def _endpoint(entry: Any, index: int, path: str) -> Endpoint:
    where = f"{path}: endpoints[{index}]"
    if not isinstance(entry, dict):
        raise GatewayConfigError(f"{where} must be a table.")
    name = _text(where, entry, "name")
    assert name is not None
    where = f"{path}: endpoint {name!r}"
    provider = entry.get("provider")
    if provider not in PROVIDERS:
        raise GatewayConfigError(f"{where}: provider must be one of {', '.join(PROVIDERS)}.")
    base_url = _text(where, entry, "base_url")
    assert base_url is not None
    if not base_url.startswith(("http://", "https://")):
        raise GatewayConfigError(f"{where}: base_url must start with http:// or https://.")
    api_key_env = _text(where, entry, "api_key_env", required=provider != "openai-compatible")
    if "api_key" in entry:
        raise GatewayConfigError(
            f"{where}: keys never go in the file; set api_key_env to the name of the variable holding it."
        )
    models = entry.get("models", [name])
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise GatewayConfigError(f"{where}: models must be a list of model names or glob patterns.")
    prices = None
    if "prices" in entry:
        raw = entry["prices"]
        if not isinstance(raw, dict) or "input" not in raw or "output" not in raw:
            raise GatewayConfigError(f"{where}: prices needs input and output (USD per million tokens).")
        prices = Prices(
            input=_number(where, "prices.input", raw["input"], -1),
            output=_number(where, "prices.output", raw["output"], -1),
            cache_read=_number(where, "prices.cache_read", raw["cache_read"], -1) if "cache_read" in raw else None,
            cache_write=_number(where, "prices.cache_write", raw["cache_write"], -1) if "cache_write" in raw else None,
        )
    inference = InferenceLogging()
    if "inference" in entry:
        raw = entry["inference"]
        if not isinstance(raw, dict):
            raise GatewayConfigError(f"{where}: inference must be a table.")
        rate = raw.get("sample_rate", 1.0)
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise GatewayConfigError(f"{where}: inference.sample_rate must be between 0 and 1.")
        inference = InferenceLogging(
            enabled=bool(raw.get("enabled", True)),
            sample_rate=float(rate),
            max_bytes=int(_number(where, "inference.max_bytes", raw.get("max_bytes", DEFAULT_INFERENCE_MAX_BYTES))),
        )
    known = {
        "name",
        "provider",
        "base_url",
        "api_key_env",
        "models",
        "prices",
        "inference",
        "timeout_seconds",
        "connect_timeout_seconds",
        *LIMIT_KEYS,
    }
    unknown = set(entry) - known
    if unknown:
        raise GatewayConfigError(f"{where}: unknown keys {sorted(unknown)}.")
    return Endpoint(
        name=name,
        provider=provider,
        base_url=base_url.rstrip("/"),
        api_key_env=api_key_env,
        models=tuple(models),
        limits=parse_limits(where, entry),
        prices=prices,
        inference=inference,
        timeout_seconds=_number(where, "timeout_seconds", entry.get("timeout_seconds", 600.0)),
        connect_timeout_seconds=_number(where, "connect_timeout_seconds", entry.get("connect_timeout_seconds", 10.0)),
    )


def _table(where: str, section: dict[str, Any], key: str, default: TableName) -> TableName | None:
    if key not in section:
        return default
    value = section[key]
    if value is False or value == "":
        return None
    if not isinstance(value, str):
        raise GatewayConfigError(f"{where}: {key} must be catalog.schema.table, or false to turn it off.")
    try:
        return TableName.parse(value)
    except Exception as exc:
        raise GatewayConfigError(f"{where}: {key}: {exc}") from exc


def parse_config(document: dict[str, Any], path: str = "<config>") -> GatewayConfig:
    section = document.get("gateway", {})
    if not isinstance(section, dict):
        raise GatewayConfigError(f"{path}: [gateway] must be a table.")
    where = f"{path}: [gateway]"
    entries = document.get("endpoints")
    if not isinstance(entries, list) or not entries:
        raise GatewayConfigError(f"{path} must hold at least one [[endpoints]] entry.")
    endpoints = tuple(_endpoint(entry, i, path) for i, entry in enumerate(entries))
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise GatewayConfigError(f"{path} names an endpoint twice.")
    storage = section.get("storage_options", {})
    if not isinstance(storage, dict) or not all(isinstance(v, str) for v in storage.values()):
        raise GatewayConfigError(f"{where}: storage_options must be a table of strings.")
    known = {
        "host",
        "port",
        "ops_host",
        "ops_port",
        "tokens",
        "warehouse",
        "storage_options",
        "usage_table",
        "inference_table",
        "redis_url",
        "replicas",
        "max_body_bytes",
        "log_buffer_rows",
        "commit_every_seconds",
        "tags_header",
    }
    unknown = set(section) - known
    if unknown:
        raise GatewayConfigError(f"{where}: unknown keys {sorted(unknown)}.")
    defaults = GatewayConfig(endpoints=())
    return GatewayConfig(
        endpoints=endpoints,
        host=str(section.get("host", defaults.host)),
        port=int(_number(where, "port", section.get("port", defaults.port))),
        ops_host=str(section.get("ops_host", defaults.ops_host)),
        ops_port=int(_number(where, "ops_port", section.get("ops_port", defaults.ops_port), -1)),
        tokens=_text(where, section, "tokens", required=False),
        warehouse=str(section.get("warehouse", defaults.warehouse)),
        storage_options=dict(storage),
        usage_table=_table(where, section, "usage_table", DEFAULT_USAGE_TABLE),
        inference_table=_table(where, section, "inference_table", DEFAULT_INFERENCE_TABLE),
        redis_url=_text(where, section, "redis_url", required=False),
        replicas=int(_number(where, "replicas", section.get("replicas", 1))),
        max_body_bytes=int(_number(where, "max_body_bytes", section.get("max_body_bytes", defaults.max_body_bytes))),
        log_buffer_rows=int(_number(where, "log_buffer_rows", section.get("log_buffer_rows", 10_000))),
        commit_every_seconds=_number(
            where, "commit_every_seconds", section.get("commit_every_seconds", defaults.commit_every_seconds)
        ),
        tags_header=str(section.get("tags_header", defaults.tags_header)).lower(),
    )


def load_config(path: str) -> GatewayConfig:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise GatewayConfigError(f"Cannot read gateway config {path}: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError(f"Gateway config {path} is not valid TOML: {exc}.") from exc
    config = parse_config(document, path)
    if config.tokens is not None and not os.path.isabs(config.tokens):
        # A relative token file is found next to the config, wherever the gateway starts.
        object.__setattr__(config, "tokens", os.path.join(os.path.dirname(os.path.abspath(path)), config.tokens))
    return config
