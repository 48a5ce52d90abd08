-- Daily totals per agent and model of one table set: the numbers of
-- `otel-ingest usage daily --by agent,model --json` (calls, tokens, cost).
CREATE OR REPLACE VIEW <catalog>.<schema>.<table_prefix>_usage_by_day AS
SELECT
  day,
  agent,
  model,
  COALESCE(SUM(calls), 0) AS calls,
  SUM(input_tokens) AS input_tokens,
  SUM(cache_read_tokens) AS cache_read_tokens,
  SUM(cache_write_tokens) AS cache_write_tokens,
  SUM(output_tokens) AS output_tokens,
  SUM(reasoning_tokens) AS reasoning_tokens,
  SUM(cost_usd) AS cost_usd,
  COUNT(*) - COUNT(cost_usd) AS unpriced_calls
FROM <catalog>.<schema>.<table_prefix>_usage_model_calls
GROUP BY day, agent, model;
