-- What the agents of one table set did: prompts, tool decisions and calls, API errors
-- (from <table_prefix>_usage_events), lines of code, commits, pull requests and active time
-- (from the agents' metrics in *_otel_metrics). Where an agent has no events on a day (its
-- logs table absent or empty), tool decisions, tool calls and API errors come from its
-- metrics, as `otel-ingest usage` counts them (docs/usage.md, "activity"); a metrics row's
-- value is the number of events it counts. Gemini CLI's CUMULATIVE sums count their
-- increases. Spark SQL / Databricks SQL; replace the placeholders.
CREATE OR REPLACE VIEW <catalog>.<schema>.<table_prefix>_usage_activity AS
WITH event_facts AS (
  SELECT time, day, table_set, agent, user, session, a,
    CASE
      WHEN event = 'user_prompt' THEN 'prompt'
      WHEN event = 'tool_decision' THEN 'tool_decision'
      WHEN event IN ('tool_result', 'tool_call') THEN 'tool_call'
      WHEN event = 'api_error' THEN 'api_error'
      WHEN agent = 'codex' AND event = 'api_request'
        AND COALESCE(a['http.response.status_code'], a['status'], '200') NOT LIKE '2%' THEN 'api_error'
    END AS kind,
    CAST(1.0 AS DOUBLE) AS value
  FROM <catalog>.<schema>.<table_prefix>_usage_events
),
events AS (
  SELECT time, day, table_set, agent, user, session, kind,
    COALESCE(a['tool_name'], a['function_name'], a['tool']) AS tool,
    a['decision'] AS decision,
    CASE WHEN kind = 'api_error' THEN FALSE WHEN a['success'] IS NOT NULL THEN lower(a['success']) IN ('true', '1') END
      AS success,
    CASE WHEN kind LIKE 'tool%' THEN TRY_CAST(a['duration_ms'] AS DOUBLE) END AS duration_ms,
    value,
    CASE WHEN kind = 'api_error' THEN COALESCE(a['status_code'], a['http.response.status_code'], a['status']) END
      AS status_code,
    'logs' AS source
  FROM event_facts
  WHERE kind IS NOT NULL
),
points AS (
  SELECT name, time_ns, start_ns, temporality, value, n, a,
    to_json(a) || to_json(r) AS series,
    CASE
      WHEN lower(r['service.name']) LIKE 'claude-code%' THEN 'claude-code'
      WHEN lower(r['service.name']) LIKE 'gemini-cli%' THEN 'gemini-cli'
      WHEN lower(r['service.name']) LIKE 'codex%' THEN 'codex'
      ELSE r['service.name']
    END AS agent,
    COALESCE(a['user.email'], a['user.id'], r['user.email'], r['user.id'], a['installation.id'], r['enduser.id'],
             a['enduser.id']) AS user,
    COALESCE(a['session.id'], r['session.id'], a['conversation.id'], a['gen_ai.conversation.id']) AS session
  FROM (
    SELECT name,
      CASE WHEN metric_type = 'histogram' THEN histogram.time_unix_nano ELSE sum.time_unix_nano END AS time_ns,
      CASE WHEN metric_type = 'histogram' THEN histogram.start_time_unix_nano ELSE sum.start_time_unix_nano END
        AS start_ns,
      CASE WHEN metric_type = 'histogram' THEN histogram.aggregation_temporality ELSE sum.aggregation_temporality END
        AS temporality,
      CASE WHEN metric_type = 'histogram' THEN histogram.sum ELSE sum.value END AS value,
      CASE WHEN metric_type = 'histogram' THEN histogram.count END AS n,
      CASE WHEN metric_type = 'histogram' THEN histogram.attributes ELSE sum.attributes END AS a,
      resource.attributes AS r
    FROM <catalog>.<schema>.<table_prefix>_otel_metrics
    WHERE name IN ('claude_code.lines_of_code.count', 'gemini_cli.lines.changed', 'claude_code.commit.count',
                   'claude_code.pull_request.count', 'claude_code.active_time.total',
                   'claude_code.code_edit_tool.decision', 'gemini_cli.tool.call.count', 'codex.tool.call',
                   'gemini_cli.api.request.count', 'codex.api_request')
      AND metric_type IN ('sum', 'histogram')
  ) AS raw_points
),
increases AS (
  -- A CUMULATIVE point counts its increase over the series' point before; a drop or a new
  -- start time is a counter reset (the increase is the value).
  SELECT name, time_ns, a, agent, user, session,
    CASE WHEN continues THEN value - previous_value ELSE value END AS value,
    CASE WHEN continues AND previous_n IS NOT NULL THEN n - previous_n ELSE n END AS n
  FROM (
    SELECT *,
      temporality = 'AGGREGATION_TEMPORALITY_CUMULATIVE' AND previous_value IS NOT NULL
        AND previous_start = start_ns AND value >= previous_value AS continues
    FROM (
      SELECT *,
        LAG(value) OVER (PARTITION BY name, series ORDER BY time_ns) AS previous_value,
        LAG(n) OVER (PARTITION BY name, series ORDER BY time_ns) AS previous_n,
        LAG(start_ns) OVER (PARTITION BY name, series ORDER BY time_ns) AS previous_start
      FROM points
    ) AS ordered
  ) AS flagged
),
metric_facts AS (
  SELECT
    timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS time,
    CAST(CAST(timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS DATE) AS STRING) AS day,
    '<catalog>.<schema>.<table_prefix>' AS table_set,
    agent, user, session, name, a, value, n,
    CASE name
      WHEN 'claude_code.code_edit_tool.decision' THEN a['tool_name']
      WHEN 'gemini_cli.tool.call.count' THEN a['function_name']
      WHEN 'codex.tool.call' THEN a['tool']
    END AS tool,
    CASE WHEN name IN ('claude_code.code_edit_tool.decision', 'gemini_cli.tool.call.count') THEN a['decision'] END
      AS decision,
    CASE name WHEN 'gemini_cli.api.request.count' THEN a['status_code'] WHEN 'codex.api_request' THEN a['status'] END
      AS status_code,
    CASE WHEN name IN ('gemini_cli.tool.call.count', 'codex.tool.call', 'codex.api_request')
      THEN lower(a['success']) IN ('true', '1') END AS success
  FROM increases
),
metric_kinds AS (
  SELECT time, day, table_set, agent, user, session, tool, decision, status_code, success, value, n,
    CASE
      WHEN name IN ('claude_code.lines_of_code.count', 'gemini_cli.lines.changed') AND a['type'] = 'added'
        THEN 'lines_added'
      WHEN name IN ('claude_code.lines_of_code.count', 'gemini_cli.lines.changed') AND a['type'] = 'removed'
        THEN 'lines_removed'
      WHEN name = 'claude_code.commit.count' THEN 'commit'
      WHEN name = 'claude_code.pull_request.count' THEN 'pull_request'
      WHEN name = 'claude_code.active_time.total' THEN 'active_seconds'
      WHEN name = 'claude_code.code_edit_tool.decision' THEN 'tool_decision'
      WHEN name IN ('gemini_cli.tool.call.count', 'codex.tool.call') THEN 'tool_call'
      -- API errors: the failed requests only. Gemini CLI's counter counts each failure twice.
      WHEN name IN ('gemini_cli.api.request.count', 'codex.api_request')
        AND (COALESCE(status_code, '200') NOT LIKE '2%' OR NOT COALESCE(success, TRUE)) THEN 'api_error'
    END AS kind,
    CASE WHEN name = 'gemini_cli.api.request.count' THEN 2.0 ELSE 1.0 END AS per_event
  FROM metric_facts
),
metrics AS (
  SELECT time, day, table_set, agent, user, session, kind, tool, decision,
    CASE WHEN kind = 'api_error' THEN FALSE ELSE success END AS success,
    CAST(NULL AS DOUBLE) AS duration_ms,
    -- Event counters count events: a histogram in its count, a sum in its value.
    CASE WHEN kind IN ('tool_decision', 'tool_call', 'api_error')
      THEN COALESCE(CAST(n AS DOUBLE), value) / per_event ELSE value END AS value,
    status_code,
    'metrics' AS source
  FROM metric_kinds
  WHERE kind IS NOT NULL
),
logged AS (
  -- (agent, day) with events: there the events count and the event counters repeat them.
  SELECT DISTINCT agent, day FROM events
  UNION
  SELECT DISTINCT agent, day FROM <catalog>.<schema>.<table_prefix>_usage_model_calls WHERE source = 'logs'
)
SELECT time, day, table_set, agent, user, session, kind, tool, decision, success, duration_ms, value, status_code, source
FROM events
UNION ALL
SELECT m.time, m.day, m.table_set, m.agent, m.user, m.session, m.kind, m.tool, m.decision, m.success, m.duration_ms,
  m.value, m.status_code, m.source
FROM metrics AS m
LEFT JOIN logged AS l ON l.agent = m.agent AND l.day = m.day
WHERE m.value <> 0
  AND (m.kind NOT IN ('tool_decision', 'tool_call', 'api_error') OR l.agent IS NULL);
