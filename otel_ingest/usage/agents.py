"""Agent and model names, normalized across the ways each agent spells them."""

from __future__ import annotations

import re

CLAUDE_CODE = "claude-code"
GEMINI_CLI = "gemini-cli"
CODEX = "codex"

# Which provider's price list applies to an agent's models (genai-prices provider ids).
PROVIDERS = {CLAUDE_CODE: "anthropic", GEMINI_CLI: "google", CODEX: "openai"}

# Claude Code's metrics say ``claude-opus-4-8[1m]`` (the 1M-context variant it runs),
# its api_request events ``claude-opus-4-8``: one model, priced the same per token.
_CONTEXT_SUFFIX = re.compile(r"\[[^\]]*\]$")


def agent_of(service_name: str | None) -> str:
    """``service.name`` → the agent: ``claude-code``, ``gemini-cli``, ``codex``, else itself."""
    name = (service_name or "").strip()
    lowered = name.lower()
    if lowered.startswith("claude-code") or lowered.startswith("claude_code"):
        return CLAUDE_CODE
    if lowered.startswith("gemini-cli") or lowered.startswith("gemini_cli"):
        return GEMINI_CLI
    # Codex CLI reports codex_exec (headless), codex_cli_rs, codex-tui, ...
    if lowered.startswith("codex"):
        return CODEX
    return name or "unknown"


def normalize_model(model: str | None) -> str | None:
    """One spelling per model: lower case, no ``[1m]``-style variant suffix, no
    ``models/`` prefix (Gemini API paths)."""
    if model is None:
        return None
    text = model.strip().lower()
    text = _CONTEXT_SUFFIX.sub("", text).removeprefix("models/")
    return text or None
