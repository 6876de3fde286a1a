WITH event_stats AS (
  SELECT
    "user_id",
    SUM(CASE WHEN "event_type" = 'order_placed' THEN "total" END) AS monetary_1,
    COUNT(
      CASE
        WHEN "event_type" = 'page_viewed'
        AND "occurred_at" >= CAST('2026-01-30 12:00:00' AS DateTime64(6, 'UTC'))
        THEN 1
      END
    ) AS recency_2
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS DateTime64(6, 'UTC'))
    AND "event_date" <= CAST('2026-03-01' AS Nullable(DATE))
    AND "event_type" IN ('order_placed', 'page_viewed')
    AND (
      "event_type" = 'order_placed'
      OR (
        "event_type" = 'page_viewed'
        AND "occurred_at" >= CAST('2026-01-30 12:00:00' AS DateTime64(6, 'UTC'))
      )
    )
  GROUP BY
    "user_id"
)
SELECT
  event_stats."user_id"
FROM event_stats
WHERE
  COALESCE(event_stats.monetary_1, 0) >= 500
  AND COALESCE(event_stats.recency_2, 0) = 0
SETTINGS join_use_nulls = 1
