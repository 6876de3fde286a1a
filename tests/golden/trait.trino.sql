WITH event_stats AS (
  SELECT
    "user_id"
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP(6))
    AND "event_date" <= CAST('2026-03-01' AS DATE)
  GROUP BY
    "user_id"
), profile AS (
  SELECT
    "user_id",
    "plan",
    "age"
  FROM profiles
  WHERE
    "tenant_id" = 1
)
SELECT
  COALESCE(event_stats."user_id", profile."user_id") AS "user_id"
FROM event_stats
FULL JOIN profile
  ON profile."user_id" = event_stats."user_id"
WHERE
  profile."plan" IN ('pro', 'team') OR profile."age" IS NULL
