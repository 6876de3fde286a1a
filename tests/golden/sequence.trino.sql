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
    AND "occurred_at" > CAST('2025-12-01 12:00:00' AS TIMESTAMP(6))
    AND "event_date" BETWEEN CAST('2025-12-01' AS DATE) AND CAST('2026-03-01' AS DATE)
    AND "event_type" IN ('page_viewed', 'checkout_started', 'order_placed')
), sequence_1_first_1 AS (
  SELECT
    "user_id",
    MIN("occurred_at") AS first_at
  FROM sequence_1_events
  WHERE
    step_1 = 1
  GROUP BY
    "user_id"
), sequence_1_first_2 AS (
  SELECT
    e."user_id" AS "user_id",
    MIN(e."occurred_at") AS first_at
  FROM sequence_1_events AS e
  JOIN sequence_1_first_1 AS p
    ON e."user_id" = p."user_id"
  WHERE
    e.step_2 = 1 AND e."occurred_at" > p.first_at
  GROUP BY
    e."user_id"
), sequence_1_first_3 AS (
  SELECT
    e."user_id" AS "user_id",
    MIN(e."occurred_at") AS first_at
  FROM sequence_1_events AS e
  JOIN sequence_1_first_2 AS p
    ON e."user_id" = p."user_id"
  WHERE
    e.step_3 = 1 AND e."occurred_at" > p.first_at
  GROUP BY
    e."user_id"
), sequence_1_latest_2 AS (
  SELECT
    e."user_id" AS "user_id",
    MAX(e."occurred_at") AS latest_at
  FROM sequence_1_events AS e
  JOIN sequence_1_first_3 AS p
    ON e."user_id" = p."user_id"
  WHERE
    e.step_2 = 1 AND e."occurred_at" < p.first_at
  GROUP BY
    e."user_id"
), sequence_1_latest_1 AS (
  SELECT
    e."user_id" AS "user_id",
    MAX(e."occurred_at") AS latest_at
  FROM sequence_1_events AS e
  JOIN sequence_1_latest_2 AS p
    ON e."user_id" = p."user_id"
  WHERE
    e.step_1 = 1 AND e."occurred_at" < p.latest_at
  GROUP BY
    e."user_id"
), sequence_1_earliest_chain AS (
  SELECT
    f."user_id" AS "user_id",
    l.latest_at AS chain_start,
    f.first_at AS chain_end
  FROM sequence_1_first_3 AS f
  JOIN sequence_1_latest_1 AS l
    ON f."user_id" = l."user_id"
), sequence_1_rest AS (
  SELECT
    e."user_id" AS "user_id",
    e."occurred_at" AS "occurred_at",
    MAX(e.step_1) AS step_1,
    MAX(e.step_2) AS step_2,
    MAX(e.step_3) AS step_3
  FROM sequence_1_events AS e
  JOIN sequence_1_earliest_chain AS c
    ON e."user_id" = c."user_id"
  WHERE
    c.chain_end > c.chain_start + INTERVAL '2' DAY
    AND e."occurred_at" > c.chain_start
  GROUP BY
    e."user_id",
    e."occurred_at"
), sequence_1_step_2 AS (
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
  FROM sequence_1_rest
), sequence_1_step_3 AS (
  SELECT
    "user_id",
    "occurred_at",
    step_3,
    MAX(CASE WHEN step_2 = 1 THEN chain_start_2 END) OVER (
      PARTITION BY "user_id"
      ORDER BY "occurred_at"
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    ) AS chain_start_3
  FROM sequence_1_step_2
  WHERE
    step_2 = 1 OR step_3 = 1
), sequence_1_late AS (
  SELECT DISTINCT
    "user_id"
  FROM sequence_1_step_3
  WHERE
    step_3 = 1 AND "occurred_at" <= chain_start_3 + INTERVAL '2' DAY
), sequence_1 AS (
  SELECT
    "user_id"
  FROM sequence_1_earliest_chain
  WHERE
    chain_end <= chain_start + INTERVAL '2' DAY
  UNION ALL
  SELECT
    "user_id"
  FROM sequence_1_late
)
SELECT
  sequence_1."user_id"
FROM sequence_1
