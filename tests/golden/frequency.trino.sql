WITH event_stats AS (
  SELECT
    "user_id",
    COUNT(*) AS frequency_1
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP(6))
    AND "occurred_at" > CAST('2026-01-30 12:00:00' AS TIMESTAMP(6))
    AND "event_date" BETWEEN CAST('2026-01-30' AS DATE) AND CAST('2026-03-01' AS DATE)
    AND "event_type" = 'order_placed'
    AND STRPOS("coupon ""code""; --", '50%_off') > 0
  GROUP BY
    "user_id"
)
SELECT
  event_stats."user_id"
FROM event_stats
WHERE
  COALESCE(event_stats.frequency_1, 0) BETWEEN 2 AND 5
