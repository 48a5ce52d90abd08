-- Normalized model calls of one table set (docs/usage.md): from the log events
-- (<table_prefix>_usage_events), else — for an agent and day without them — from the token
-- metrics, as `otel-ingest usage` counts them. Spark SQL / Databricks SQL; replace <catalog>,
-- <schema> and <table_prefix>. Canonical counting: input_tokens includes cache reads and
-- writes, output_tokens includes reasoning. Cost: the agent's reported cost, else estimated
-- from <catalog>.<schema>.usage_prices (written by `otel-ingest usage prices`).
CREATE OR REPLACE VIEW <catalog>.<schema>.<table_prefix>_usage_model_calls AS
WITH log_calls AS (
  -- Claude Code: the Anthropic API's input_tokens excludes the cache.
  SELECT time, day, table_set, agent, user, session, model, model_reported, CAST(1 AS BIGINT) AS calls,
    COALESCE(TRY_CAST(a['input_tokens'] AS BIGINT), 0) + COALESCE(TRY_CAST(a['cache_read_tokens'] AS BIGINT), 0)
      + COALESCE(TRY_CAST(a['cache_creation_tokens'] AS BIGINT), 0) AS input_tokens,
    COALESCE(TRY_CAST(a['cache_read_tokens'] AS BIGINT), 0) AS cache_read_tokens,
    COALESCE(TRY_CAST(a['cache_creation_tokens'] AS BIGINT), 0) AS cache_write_tokens,
    COALESCE(TRY_CAST(a['output_tokens'] AS BIGINT), 0) AS output_tokens,
    CAST(0 AS BIGINT) AS reasoning_tokens,
    TRY_CAST(a['cost_usd'] AS DOUBLE) AS reported_cost,
    TRY_CAST(a['duration_ms'] AS DOUBLE) AS duration_ms,
    CAST(NULL AS STRING) AS status_code
  FROM <catalog>.<schema>.<table_prefix>_usage_events WHERE agent = 'claude-code' AND event = 'api_request'
  UNION ALL
  -- Gemini CLI: the prompt count includes cached tokens; thoughts are output.
  SELECT time, day, table_set, agent, user, session, model, model_reported, CAST(1 AS BIGINT),
    COALESCE(TRY_CAST(a['input_token_count'] AS BIGINT), 0) + COALESCE(TRY_CAST(a['tool_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['cached_content_token_count'] AS BIGINT), 0),
    CAST(0 AS BIGINT),
    COALESCE(TRY_CAST(a['output_token_count'] AS BIGINT), 0) + COALESCE(TRY_CAST(a['thoughts_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['thoughts_token_count'] AS BIGINT), 0),
    CAST(NULL AS DOUBLE),
    TRY_CAST(a['duration_ms'] AS DOUBLE),
    COALESCE(a['status_code'], a['http.status_code'])
  FROM <catalog>.<schema>.<table_prefix>_usage_events WHERE agent = 'gemini-cli' AND event = 'api_response'
  UNION ALL
  -- Codex: the completed response with token counts (input includes cached, output reasoning).
  SELECT time, day, table_set, agent, user, session, model, model_reported, CAST(1 AS BIGINT),
    COALESCE(TRY_CAST(a['input_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['cached_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['cache_write_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['output_token_count'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['reasoning_token_count'] AS BIGINT), 0),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS STRING)
  FROM <catalog>.<schema>.<table_prefix>_usage_events
  WHERE agent = 'codex' AND event = 'sse_event' AND a['event.kind'] = 'response.completed'
    AND a['input_token_count'] IS NOT NULL
  UNION ALL
  -- Any other service following the OpenTelemetry GenAI conventions.
  SELECT time, day, table_set, agent, user, session, model, model_reported, CAST(1 AS BIGINT),
    COALESCE(TRY_CAST(a['gen_ai.usage.input_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.cache_read.input_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.cache_creation.input_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.output_tokens'] AS BIGINT), 0),
    COALESCE(TRY_CAST(a['gen_ai.usage.reasoning.output_tokens'] AS BIGINT), 0),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS DOUBLE),
    CAST(NULL AS STRING)
  FROM <catalog>.<schema>.<table_prefix>_usage_events
  WHERE agent NOT IN ('claude-code', 'gemini-cli', 'codex') AND a['gen_ai.usage.input_tokens'] IS NOT NULL
),
points AS (
  -- Token (and Claude Code's cost) data points, one row per point and token type.
  SELECT
    time_ns, start_ns, temporality, value, n,
    to_json(a) || to_json(r) AS series,
    CASE
      WHEN lower(r['service.name']) LIKE 'claude-code%' THEN 'claude-code'
      WHEN lower(r['service.name']) LIKE 'gemini-cli%' THEN 'gemini-cli'
      WHEN lower(r['service.name']) LIKE 'codex%' THEN 'codex'
      ELSE r['service.name']
    END AS agent,
    COALESCE(a['user.email'], a['user.id'], r['user.email'], r['user.id'], a['installation.id'], r['enduser.id'],
             a['enduser.id']) AS user,
    COALESCE(a['session.id'], r['session.id'], a['conversation.id'], a['gen_ai.conversation.id']) AS session,
    COALESCE(a['model'], a['gen_ai.response.model'], a['gen_ai.request.model']) AS model_reported,
    CASE
      WHEN name = 'claude_code.cost.usage' THEN 'cost'
      WHEN name = 'claude_code.token.usage' THEN
        CASE a['type'] WHEN 'input' THEN 'input' WHEN 'output' THEN 'output' WHEN 'cacheRead' THEN 'cache_read'
          WHEN 'cacheCreation' THEN 'cache_write' END
      WHEN name = 'gemini_cli.token.usage' THEN
        CASE a['type'] WHEN 'input' THEN 'input' WHEN 'output' THEN 'output' WHEN 'cache' THEN 'cache_read'
          WHEN 'thought' THEN 'reasoning' WHEN 'tool' THEN 'tool' END
      ELSE
        CASE a['token_type'] WHEN 'input' THEN 'input' WHEN 'cached_input' THEN 'cache_read'
          WHEN 'cache_write_input' THEN 'cache_write' WHEN 'output' THEN 'output'
          WHEN 'reasoning_output' THEN 'reasoning' END
    END AS token_type
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
    WHERE name IN ('claude_code.token.usage', 'claude_code.cost.usage', 'gemini_cli.token.usage',
                   'codex.turn.token_usage')
      AND metric_type IN ('sum', 'histogram')
  ) AS raw_points
),
increases AS (
  -- Gemini CLI's sums are CUMULATIVE: each point counts as its increase over the series'
  -- point before; a drop or a new start time is a counter reset (the increase is the value).
  SELECT agent, user, session, model_reported, time_ns, token_type, n,
    CASE
      WHEN temporality = 'AGGREGATION_TEMPORALITY_CUMULATIVE' AND previous_value IS NOT NULL
        AND previous_start = start_ns AND value >= previous_value THEN value - previous_value
      ELSE value
    END AS value
  FROM (
    SELECT *,
      LAG(value) OVER (PARTITION BY series ORDER BY time_ns) AS previous_value,
      LAG(start_ns) OVER (PARTITION BY series ORDER BY time_ns) AS previous_start
    FROM points WHERE token_type IS NOT NULL
  ) AS ordered
),
metric_totals AS (
  SELECT agent, user, session, model_reported, time_ns,
    COALESCE(SUM(CASE WHEN token_type = 'input' THEN value END), 0) AS input,
    COALESCE(SUM(CASE WHEN token_type = 'output' THEN value END), 0) AS output,
    COALESCE(SUM(CASE WHEN token_type = 'cache_read' THEN value END), 0) AS cache_read,
    COALESCE(SUM(CASE WHEN token_type = 'cache_write' THEN value END), 0) AS cache_write,
    COALESCE(SUM(CASE WHEN token_type = 'reasoning' THEN value END), 0) AS reasoning,
    COALESCE(SUM(CASE WHEN token_type = 'tool' THEN value END), 0) AS tool,
    SUM(CASE WHEN token_type = 'cost' THEN value END) AS cost,
    SUM(CASE WHEN token_type = 'input' THEN n END) AS turns
  FROM increases
  GROUP BY agent, user, session, model_reported, time_ns
),
metric_calls AS (
  SELECT
    timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS time,
    CAST(CAST(timestamp_micros(CAST(FLOOR(time_ns / 1000) AS BIGINT)) AS DATE) AS STRING) AS day,
    '<catalog>.<schema>.<table_prefix>' AS table_set,
    agent, user, session,
    CASE
      WHEN lower(model_reported) LIKE '%]' AND instr(model_reported, '[') > 0
        THEN substring(lower(model_reported), 1, instr(model_reported, '[') - 1)
      WHEN lower(model_reported) LIKE 'models/%' THEN substring(lower(model_reported), 8)
      ELSE lower(model_reported)
    END AS model,
    model_reported,
    -- Codex's histograms count turns; Claude Code's and Gemini CLI's sums count no calls.
    CASE WHEN turns > 0 THEN CAST(turns AS BIGINT) END AS calls,
    CAST(ROUND(CASE WHEN agent = 'claude-code' THEN input + cache_read + cache_write ELSE input + tool END) AS BIGINT)
      AS input_tokens,
    CAST(ROUND(cache_read) AS BIGINT) AS cache_read_tokens,
    CAST(ROUND(cache_write) AS BIGINT) AS cache_write_tokens,
    CAST(ROUND(CASE WHEN agent = 'gemini-cli' THEN output + reasoning ELSE output END) AS BIGINT) AS output_tokens,
    CAST(ROUND(reasoning) AS BIGINT) AS reasoning_tokens,
    cost AS reported_cost,
    CAST(NULL AS DOUBLE) AS duration_ms,
    CAST(NULL AS STRING) AS status_code
  FROM metric_totals
  WHERE input + output + cache_read + cache_write + reasoning > 0
),
calls AS (
  SELECT *, 'logs' AS source FROM log_calls
  UNION ALL
  -- Metrics count only for an agent and day without events: otherwise they repeat them.
  SELECT m.*, 'metrics' AS source
  FROM metric_calls AS m
  LEFT JOIN (SELECT DISTINCT agent, day FROM log_calls) AS l ON l.agent = m.agent AND l.day = m.day
  WHERE l.agent IS NULL
)
SELECT
  c.time, c.day, c.table_set, c.agent, c.user, c.session, c.model, c.model_reported, c.calls,
  c.input_tokens, c.cache_read_tokens, c.cache_write_tokens, c.output_tokens, c.reasoning_tokens,
  COALESCE(
    c.reported_cost,
    ((c.input_tokens - c.cache_read_tokens - c.cache_write_tokens) * p.input_mtok
      + c.cache_read_tokens * COALESCE(p.cache_read_mtok, p.input_mtok)
      + c.cache_write_tokens * COALESCE(p.cache_write_mtok, p.input_mtok)
      + c.output_tokens * p.output_mtok) / 1000000 + p.request_usd
  ) AS cost_usd,
  CASE
    WHEN c.reported_cost IS NOT NULL THEN 'reported'
    WHEN p.input_mtok IS NOT NULL THEN 'estimated'
  END AS cost_source,
  c.duration_ms, c.status_code, c.source
FROM calls AS c
LEFT JOIN <catalog>.<schema>.usage_prices AS p
  ON p.agent = c.agent AND p.model = c.model AND c.day >= p.valid_from AND c.day < p.valid_until;
