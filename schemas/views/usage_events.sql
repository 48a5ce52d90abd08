-- The log events of one table set, with what every usage view needs: time, agent, user,
-- session and model, normalized as docs/usage.md says. usage_model_calls and
-- usage_activity read this view. Spark SQL / Databricks SQL; replace <catalog>, <schema>
-- and <table_prefix>. Times are UTC when the session time zone is UTC (the Databricks default).
CREATE OR REPLACE VIEW <catalog>.<schema>.<table_prefix>_usage_events AS
SELECT
  time_ns,
  timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS time,
  CAST(CAST(timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS DATE) AS STRING) AS day,
  '<catalog>.<schema>.<table_prefix>' AS table_set,
  agent,
  event_name,
  regexp_replace(event_name, '^(claude_code|gemini_cli|codex)[.]', '') AS event,
  a,
  r,
  COALESCE(a['user.email'], a['user.id'], r['user.email'], r['user.id'], a['installation.id'], r['enduser.id'],
           a['enduser.id']) AS user,
  COALESCE(a['session.id'], r['session.id'], a['conversation.id'], a['gen_ai.conversation.id']) AS session,
  model_reported,
  -- One name per model: claude-opus-4-8[1m] (Claude Code's metrics) is claude-opus-4-8.
  CASE
    WHEN model_lower LIKE '%]' AND instr(model_lower, '[') > 0
      THEN substring(model_lower, 1, instr(model_lower, '[') - 1)
    WHEN model_lower LIKE 'models/%' THEN substring(model_lower, 8)
    ELSE model_lower
  END AS model
FROM (
  SELECT
    CASE WHEN time_unix_nano > 0 THEN time_unix_nano ELSE observed_time_unix_nano END AS time_ns,
    CASE
      WHEN lower(resource.attributes['service.name']) LIKE 'claude-code%' THEN 'claude-code'
      WHEN lower(resource.attributes['service.name']) LIKE 'gemini-cli%' THEN 'gemini-cli'
      WHEN lower(resource.attributes['service.name']) LIKE 'codex%' THEN 'codex'
      ELSE resource.attributes['service.name']
    END AS agent,
    attributes['event.name'] AS event_name,
    attributes AS a,
    resource.attributes AS r,
    COALESCE(attributes['model'], attributes['gen_ai.response.model'], attributes['gen_ai.request.model'])
      AS model_reported,
    lower(COALESCE(attributes['model'], attributes['gen_ai.response.model'], attributes['gen_ai.request.model']))
      AS model_lower
  FROM <catalog>.<schema>.<table_prefix>_otel_logs
) AS events;
