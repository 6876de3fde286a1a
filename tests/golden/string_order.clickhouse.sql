WITH event_stats AS (
  SELECT
    "user_id",
    COUNT(*) AS frequency_1
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS DateTime64(6, 'UTC'))
    AND "event_date" <= CAST('2026-03-01' AS Nullable(DATE))
    AND "event_type" = 'page_viewed'
    AND "path" < '/b'
  GROUP BY
    "user_id"
), profile AS (
  SELECT
    "user_id",
    "plan"
  FROM profiles
  WHERE
    "tenant_id" = 1
)
SELECT
  event_stats."user_id"
FROM event_stats
LEFT JOIN profile
  ON profile."user_id" = event_stats."user_id"
WHERE
  profile."plan" BETWEEN 'Z' AND 'c' AND COALESCE(event_stats.frequency_1, 0) >= 1
SETTINGS join_use_nulls = 1
