WITH event_stats AS (
  SELECT
    "user_id",
    AVG("total") AS monetary_1
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP(6))
    AND "occurred_at" >= CAST('2026-01-01 00:00:00' AS TIMESTAMP(6))
    AND "event_date" BETWEEN CAST('2026-01-01' AS DATE) AND CAST('2026-03-01' AS DATE)
    AND "event_type" = 'order_placed'
    AND "occurred_at" <= CAST('2026-01-31 23:00:00' AS TIMESTAMP(6))
  GROUP BY
    "user_id"
)
SELECT
  event_stats."user_id"
FROM event_stats
WHERE
  event_stats.monetary_1 > 99.5
