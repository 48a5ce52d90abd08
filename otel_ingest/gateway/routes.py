"""Which client paths the gateway serves, and what each one is.

=================================================  ==========  =================
client path                                        dialect     api type
=================================================  ==========  =================
POST /anthropic/v1/messages                        anthropic   messages
POST /anthropic/v1/messages/count_tokens           anthropic   count_tokens
GET  /anthropic/v1/models                          anthropic   (listing)
POST /openai/v1/responses                          openai      responses
POST /openai/v1/chat/completions                   openai      chat_completions
GET  /openai/v1/models                             openai      (listing)
POST /cursor/v1/chat/completions                   openai      chat_completions
GET  /cursor/v1/models                             openai      (listing)
POST /gemini/v1beta/models/<model>:generateContent google      generate_content
POST /gemini/v1beta/models/<model>:streamGenerateContent  …    generate_content
POST /gemini/v1beta/models/<model>:countTokens     google      count_tokens
GET  /gemini/v1beta/models                         google      (listing)
=================================================  ==========  =================

(``/gemini/v1/…`` works like ``/gemini/v1beta/…``.) Everything else is refused before
any upstream call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from otel_ingest.gateway.config import Endpoint, Provider
from otel_ingest.gateway.errors import Dialect, UnknownRoute

ROUTE_PROVIDERS: dict[str, tuple[Provider, ...]] = {
    "anthropic": ("anthropic",),
    "openai": ("openai", "openai-compatible"),
    "cursor": ("openai", "openai-compatible"),
    "gemini": ("google",),
}
DIALECTS: dict[str, Dialect] = {"anthropic": "anthropic", "openai": "openai", "cursor": "openai", "gemini": "google"}

_GEMINI = re.compile(r"^/(v1beta|v1)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")


@dataclass(frozen=True)
class Target:
    """A resolved client request: its route, its kind, and the model named in the path."""

    route: str  # anthropic | openai | cursor | gemini
    api_type: str  # messages | responses | chat_completions | generate_content | count_tokens | models
    upstream_path: str  # appended to the endpoint's base_url
    path_model: str | None = None  # Gemini names the model in the path

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.route]

    @property
    def providers(self) -> tuple[Provider, ...]:
        return ROUTE_PROVIDERS[self.route]

    @property
    def is_listing(self) -> bool:
        return self.api_type == "models"


def dialect_of(path: str) -> Dialect:
    """The error dialect for any path, known or not (by its first segment)."""
    first = path.strip("/").split("/", 1)[0]
    return DIALECTS.get(first, "openai")


def resolve(method: str, path: str) -> Target:
    """Map a client path to a Target; raises UnknownRoute."""
    route, _, rest = path.lstrip("/").partition("/")
    rest = "/" + rest
    target: Target | None = None
    if route == "anthropic":
        target = {
            ("POST", "/v1/messages"): Target(route, "messages", "/v1/messages"),
            ("POST", "/v1/messages/count_tokens"): Target(route, "count_tokens", "/v1/messages/count_tokens"),
            ("GET", "/v1/models"): Target(route, "models", ""),
        }.get((method, rest))
    elif route in ("openai", "cursor"):
        table = {
            ("POST", "/v1/chat/completions"): Target(route, "chat_completions", "/chat/completions"),
            ("GET", "/v1/models"): Target(route, "models", ""),
        }
        if route == "openai":
            table[("POST", "/v1/responses")] = Target(route, "responses", "/responses")
        target = table.get((method, rest))
    elif route == "gemini":
        if method == "GET" and rest in ("/v1beta/models", "/v1/models"):
            target = Target(route, "models", "")
        elif method == "POST" and (match := _GEMINI.match(rest)):
            version, model, verb = match.groups()
            api_type = "count_tokens" if verb == "countTokens" else "generate_content"
            target = Target(route, api_type, f"/{version}/models/{model}:{verb}", model)
    if target is None:
        known = (
            "/anthropic/v1/messages, /openai/v1/responses, /openai/v1/chat/completions, "
            "/cursor/v1/chat/completions, /gemini/v1beta/models/<model>:generateContent and the /models listings"
        )
        raise UnknownRoute(f"The gateway does not serve {method} {path}; it serves {known}.")
    return target


def choose_endpoint(endpoints: tuple[Endpoint, ...], target: Target, model: str) -> Endpoint | None:
    """The first endpoint of the route's providers that serves ``model``."""
    return next((e for e in endpoints if e.provider in target.providers and e.serves(model)), None)
