WITH event_stats AS (
  SELECT
    "user_id",
    MIN("occurred_at") AS first_seen
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS DateTime64(6, 'UTC'))
    AND "event_date" <= CAST('2026-03-01' AS Nullable(DATE))
  GROUP BY
    "user_id"
)
SELECT
  event_stats."user_id"
FROM event_stats
WHERE
  event_stats.first_seen > CAST('2026-02-15 12:00:00' AS DateTime64(6, 'UTC'))
SETTINGS join_use_nulls = 1
