"""The AI gateway: one model base URL for Claude Code, Codex CLI, Gemini CLI and Cursor,
with grants, rate limits, budgets, and usage and inference tables (docs/gateway.md)."""
