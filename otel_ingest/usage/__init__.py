"""Coding-agent usage: one normalized model of model calls and activity, derived from the
raw ``*_otel_logs``, ``*_otel_metrics`` and ``*_otel_spans`` tables (docs/usage.md).

Data flows one way: ``sources`` (which raw tables exist, which files are new) →
``derive`` (raw rows → normalized facts, per agent) → ``pricing`` (cost) → ``store``
(incremental derived Delta tables) → ``query`` (selection rules, filters, groupings) →
``report`` (the CLI) and ``otel_ingest.dashboard``.
"""
