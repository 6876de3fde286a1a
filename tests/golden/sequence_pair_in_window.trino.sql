WITH sequence_1_events AS (
  SELECT
    "user_id",
    "occurred_at",
    CASE WHEN "event_type" = 'page_viewed' AND "path" = '/pricing' THEN 1 ELSE 0 END AS step_1,
    CASE WHEN "event_type" = 'order_placed' THEN 1 ELSE 0 END AS step_2
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP(6))
    AND "occurred_at" >= CAST('2026-02-01 00:00:00' AS TIMESTAMP(6))
    AND "event_date" BETWEEN CAST('2026-02-01' AS DATE) AND CAST('2026-03-01' AS DATE)
    AND "event_type" IN ('page_viewed', 'order_placed')
    AND (
      (
        "event_type" = 'page_viewed' AND "path" = '/pricing'
      )
      OR "event_type" = 'order_placed'
    )
), sequence_1_ends AS (
  SELECT
    "user_id",
    MIN(CASE WHEN step_1 = 1 THEN "occurred_at" END) AS first_at,
    MAX(CASE WHEN step_2 = 1 THEN "occurred_at" END) AS last_at
  FROM sequence_1_events
  GROUP BY
    "user_id"
), sequence_1 AS (
  SELECT
    "user_id"
  FROM sequence_1_ends
  WHERE
    first_at < last_at
)
SELECT
  sequence_1."user_id"
FROM sequence_1
