WITH sequence_1_events AS (
  SELECT
    "user_id",
    "occurred_at",
    CASE WHEN "event_type" = 'page_viewed' THEN 1 ELSE 0 END AS step_1,
    CASE WHEN "event_type" = 'checkout_started' THEN 1 ELSE 0 END AS step_2,
    CASE WHEN "event_type" = 'order_placed' THEN 1 ELSE 0 END AS step_3
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP)
    AND "occurred_at" > CAST('2025-12-01 12:00:00' AS TIMESTAMP)
    AND "event_date" BETWEEN CAST('2025-12-01' AS DATE) AND CAST('2026-03-01' AS DATE)
    AND "event_type" IN ('page_viewed', 'checkout_started', 'order_placed')
), sequence_1_times AS (
  SELECT
    e."user_id" AS "user_id",
    e."occurred_at" AS "occurred_at",
    MAX(e.step_1) AS step_1,
    MAX(e.step_2) AS step_2,
    MAX(e.step_3) AS step_3
  FROM sequence_1_events AS e
  GROUP BY
    e."user_id",
    e."occurred_at"
), sequence_1_all_step_2 AS (
  SELECT
    "user_id",
    "occurred_at",
    step_2,
    step_3,
    MAX(CASE WHEN step_1 = 1 THEN "occurred_at" END) OVER (
      PARTITION BY "user_id"
      ORDER BY "occurred_at"
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    ) AS chain_start_2
  FROM sequence_1_times
), sequence_1_all_step_3 AS (
  SELECT
    "user_id",
    "occurred_at",
    step_3,
    MAX(CASE WHEN step_2 = 1 THEN chain_start_2 END) OVER (
      PARTITION BY "user_id"
      ORDER BY "occurred_at"
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    ) AS chain_start_3
  FROM sequence_1_all_step_2
  WHERE
    step_2 = 1 OR step_3 = 1
), sequence_1_all_late AS (
  SELECT DISTINCT
    "user_id"
  FROM sequence_1_all_step_3
  WHERE
    step_3 = 1 AND "occurred_at" <= chain_start_3 + INTERVAL '2 DAY'
), sequence_1 AS (
  SELECT
    "user_id"
  FROM sequence_1_all_late
)
SELECT
  sequence_1."user_id"
FROM sequence_1
