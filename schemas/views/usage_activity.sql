-- What the agents of one table set did: prompts, tool decisions and calls, API errors
-- (from <table_prefix>_usage_events), lines of code, commits and pull requests (Claude
-- Code's DELTA metrics in *_otel_metrics). Spark SQL / Databricks SQL; replace the placeholders.
CREATE OR REPLACE VIEW <catalog>.<schema>.<table_prefix>_usage_activity AS
WITH facts AS (
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
  UNION ALL
  SELECT
    timestamp_micros(CAST(FLOOR(sum.time_unix_nano / 1000) AS BIGINT)),
    CAST(CAST(timestamp_micros(CAST(FLOOR(sum.time_unix_nano / 1000) AS BIGINT)) AS DATE) AS STRING),
    '<catalog>.<schema>.<table_prefix>',
    'claude-code',
    COALESCE(sum.attributes['user.email'], sum.attributes['user.id'], resource.attributes['user.email'],
             resource.attributes['user.id']),
    COALESCE(sum.attributes['session.id'], resource.attributes['session.id']),
    sum.attributes,
    CASE
      WHEN name = 'claude_code.lines_of_code.count' AND sum.attributes['type'] = 'added' THEN 'lines_added'
      WHEN name = 'claude_code.lines_of_code.count' AND sum.attributes['type'] = 'removed' THEN 'lines_removed'
      WHEN name = 'claude_code.commit.count' THEN 'commit'
      WHEN name = 'claude_code.pull_request.count' THEN 'pull_request'
      WHEN name = 'claude_code.active_time.total' THEN 'active_seconds'
    END,
    sum.value
  FROM <catalog>.<schema>.<table_prefix>_otel_metrics
  WHERE name LIKE 'claude_code.%' AND sum.value <> 0
)
SELECT
  time, day, table_set, agent, user, session, kind,
  COALESCE(a['tool_name'], a['function_name'], a['tool']) AS tool,
  a['decision'] AS decision,
  CASE WHEN kind = 'api_error' THEN FALSE WHEN a['success'] IS NOT NULL THEN lower(a['success']) IN ('true', '1') END
    AS success,
  CASE WHEN kind LIKE 'tool%' THEN TRY_CAST(a['duration_ms'] AS DOUBLE) END AS duration_ms,
  value,
  CASE WHEN kind = 'api_error' THEN COALESCE(a['status_code'], a['http.response.status_code'], a['status']) END
    AS status_code
FROM facts
WHERE kind IS NOT NULL;
