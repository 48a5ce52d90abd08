"""Model listings in each provider's format: the models of the endpoints a principal may use.

Answered by the gateway itself (no upstream call): the listing is what the gateway
allows, not what the provider offers.
"""

from __future__ import annotations

from typing import Any

from otel_ingest.gateway.config import Endpoint
from otel_ingest.gateway.grants import Grant
from otel_ingest.gateway.routes import Target

_EPOCH_ISO = "2025-01-01T00:00:00Z"


def listing(target: Target, endpoints: tuple[Endpoint, ...], grant: Grant) -> dict[str, Any]:
    models: list[tuple[str, Endpoint]] = []
    seen = set()
    for endpoint in endpoints:
        if endpoint.provider in target.providers and grant.allows(endpoint.name):
            for model in endpoint.listed_models:
                if model not in seen:
                    seen.add(model)
                    models.append((model, endpoint))
    if target.dialect == "anthropic":
        data = [{"type": "model", "id": m, "display_name": m, "created_at": _EPOCH_ISO} for m, _ in models]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    if target.dialect == "google":
        return {
            "models": [
                {
                    "name": f"models/{m}",
                    "displayName": m,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                }
                for m, _ in models
            ]
        }
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": e.name} for m, e in models],
    }
