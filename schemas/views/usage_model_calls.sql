-- Normalized model calls of one table set, from its *_otel_logs table (docs/usage.md).
-- Spark SQL / Databricks SQL; replace <catalog>, <schema> and <table_prefix>.
-- Canonical counting: input_tokens includes cache reads and writes, output_tokens
-- includes reasoning. Costs: Claude Code's reported cost; estimated costs (genai-prices)
-- come from `otel-ingest usage`, not from SQL, so cost_usd is NULL for other agents here.
-- Times are UTC when the session time zone is UTC (the Databricks default).
CREATE OR REPLACE VIEW <catalog>.<schema>.<table_prefix>_usage_model_calls AS
WITH events AS (
  SELECT
    CASE WHEN time_unix_nano > 0 THEN time_unix_nano ELSE observed_time_unix_nano END AS time_ns,
    CASE
      WHEN lower(resource.attributes['service.name']) LIKE 'claude-code%' THEN 'claude-code'
      WHEN lower(resource.attributes['service.name']) LIKE 'gemini-cli%' THEN 'gemini-cli'
      WHEN lower(resource.attributes['service.name']) LIKE 'codex%' THEN 'codex'
      ELSE resource.attributes['service.name']
    END AS agent,
    attributes['event.name'] AS event,
    attributes AS a,
    resource.attributes AS r
  FROM <catalog>.<schema>.<table_prefix>_otel_logs
),
calls AS (
  -- Claude Code: the Anthropic API's input_tokens excludes the cache.
  SELECT time_ns, agent, a, r,
    COALESCE(TRY_CAST(a['input_tokens'] AS BIGINT), 0) + COALESCE(TRY_CAST(a['cache_read_tokens'] AS BIGINT), 0)
      + COALESCE(TRY_CAST(a['cache_creation_tokens'] AS BIGINT), 0) AS input_tokens,
    COALESCE(TRY_CAST(a['cache_read_tokens'] AS BIGINT), 0) AS cache_read_tokens,
    COALESCE(TRY_CAST(a['cache_creation_tokens'] AS BIGINT), 0) AS cache_write_tokens,
    COALESCE(TRY_CAST(a['output_tokens'] AS BIGINT), 0) AS output_tokens,
    CAST(0 AS BIGINT) AS reasoning_tokens,
    TRY_CAST(a['cost_usd'] AS DOUBLE) AS cost_usd,
    TRY_CAST(a['duration_ms'] AS DOUBLE) AS duration_ms,
    CAST(NULL AS STRING) AS status_code
  FROM events WHERE agent = 'claude-code' AND event = 'api_request'
  UNION ALL
  -- Gemini CLI: the prompt count includes cached tokens; thoughts are output.
  SELECT time_ns, agent, a, r,
    COALESCE(TRY_CAST(a['input_token_count'] AS BIGINT), 0) + COALESCE(TRY_CAST(a['tool_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['cached_content_token_count'] AS BIGINT), 0),
    CAST(0 AS BIGINT),
    COALESCE(TRY_CAST(a['output_token_count'] AS BIGINT), 0) + COALESCE(TRY_CAST(a['thoughts_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['thoughts_token_count'] AS BIGINT), 0),
    CAST(NULL AS DOUBLE),
    TRY_CAST(a['duration_ms'] AS DOUBLE),
    COALESCE(a['status_code'], a['http.status_code'])
  FROM events WHERE agent = 'gemini-cli' AND event = 'gemini_cli.api_response'
  UNION ALL
  -- Codex: the completed response with token counts (input includes cached, output reasoning).
  SELECT time_ns, agent, a, r,
    COALESCE(TRY_CAST(a['input_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['cached_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['cache_write_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['output_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['reasoning_token_count'] AS BIGINT), 0),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS STRING)
  FROM events
  WHERE agent = 'codex' AND event = 'codex.sse_event' AND a['event.kind'] = 'response.completed'
    AND a['input_token_count'] IS NOT NULL
  UNION ALL
  -- Any other service following the OpenTelemetry GenAI conventions.
  SELECT time_ns, agent, a, r,
    COALESCE(TRY_CAST(a['gen_ai.usage.input_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.cache_read.input_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.cache_creation.input_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.output_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.reasoning.output_tokens'] AS BIGINT), 0),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS STRING)
  FROM events
  WHERE agent NOT IN ('claude-code', 'gemini-cli', 'codex') AND a['gen_ai.usage.input_tokens'] IS NOT NULL
)
SELECT
  timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS time,
  CAST(CAST(timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS DATE) AS STRING) AS day,
  '<catalog>.<schema>.<table_prefix>' AS table_set,
  agent,
  COALESCE(a['user.email'], a['user.id'], r['user.email'], r['user.id'], a['installation.id'], r['enduser.id'],
           a['enduser.id']) AS user,
  COALESCE(a['session.id'], r['session.id'], a['conversation.id'], a['gen_ai.conversation.id']) AS session,
  -- One name per model: claude-opus-4-8[1m] (Claude Code's metrics) is claude-opus-4-8.
  CASE
    WHEN model_raw LIKE '%]' AND instr(model_raw, '[') > 0 THEN substring(model_raw, 1, instr(model_raw, '[') - 1)
    ELSE model_raw
  END AS model,
  COALESCE(a['model'], a['gen_ai.response.model'], a['gen_ai.request.model']) AS model_reported,
  CAST(1 AS BIGINT) AS calls,
  input_tokens,
  cache_read_tokens,
  cache_write_tokens,
  output_tokens,
  reasoning_tokens,
  cost_usd,
  CASE WHEN cost_usd IS NOT NULL THEN 'reported' END AS cost_source,
  duration_ms,
  status_code,
  'logs' AS source
FROM (
  SELECT *, lower(COALESCE(a['model'], a['gen_ai.response.model'], a['gen_ai.request.model'])) AS model_raw FROM calls
) AS named;
