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
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP(6))
    AND "occurred_at" > CAST('2026-02-22 12:00:00' AS TIMESTAMP(6))
    AND "event_date" BETWEEN CAST('2026-02-22' AS DATE) AND CAST('2026-03-01' AS DATE)
    AND "event_type" IN ('page_viewed', 'checkout_started', 'order_placed')
), sequence_1_ends AS (
  SELECT
    "user_id",
    MIN(CASE WHEN step_1 = 1 THEN "occurred_at" END) AS first_at,
    MAX(CASE WHEN step_3 = 1 THEN "occurred_at" END) AS last_at
  FROM sequence_1_events
  GROUP BY
    "user_id"
), sequence_1_first_2 AS (
  SELECT
    e."user_id" AS "user_id",
    MIN(e."occurred_at") AS first_at
  FROM sequence_1_events AS e
  JOIN sequence_1_ends AS p
    ON e."user_id" = p."user_id"
  WHERE
    e.step_2 = 1 AND e."occurred_at" > p.first_at
  GROUP BY
    e."user_id"
), sequence_1 AS (
  SELECT
    r."user_id" AS "user_id"
  FROM sequence_1_first_2 AS r
  JOIN sequence_1_ends AS l
    ON r."user_id" = l."user_id"
  WHERE
    r.first_at < l.last_at
)
SELECT
  sequence_1."user_id"
FROM sequence_1
