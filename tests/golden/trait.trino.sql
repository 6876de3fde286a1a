WITH event_stats AS (
  SELECT
    "user_id"
  FROM events
  WHERE
    "tenant_id" = 1
    AND "occurred_at" <= CAST('2026-03-01 12:00:00' AS TIMESTAMP)
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
), users AS (
  SELECT
    "user_id"
  FROM event_stats
  UNION
  SELECT
    "user_id"
  FROM profile
)
SELECT
  users."user_id"
FROM users
LEFT JOIN profile
  ON profile."user_id" = users."user_id"
WHERE
  profile."plan" IN ('pro', 'team') OR profile."age" IS NULL
