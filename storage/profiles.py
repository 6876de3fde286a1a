"""Profile merge: the latest value of every trait per user, kept as a table.

Segment queries read traits from this table; they never reconstruct them with
arg_max over all identify events.

The profiles file has one row per user: ``user_id``, ``updated_at`` (latest identify
seen), ``traits`` (JSON object of the winning values, keys sorted), ``trait_times``
(JSON object trait -> epoch microseconds of the winning value) and typed
``t_<name>`` columns (same typing rules as event properties, storage/properties.py).

The table is a base file plus at most one delta file holding the current rows of
users changed since the base was written (a delta row replaces the user's base row;
``storage.duck.current_profiles_sql``). An identify flush merges its batch into the rows of the
users in it and rewrites only the delta; the base is rewritten once the delta grows
past a fraction of it (``storage/lake.py``, ``upsert_profiles``). Merging expands only
the stored rows of the users in the batch, and a user new to the table with a single
identify in the batch is taken as sent (its traits text unchanged). Per (user, trait) the value with the greatest
updated_at wins; on a tie the newer write wins (batch over stored, later batch row
over earlier). A trait set to JSON null is a value like any other (it wins by
time and reads NULL in its typed column).
"""
from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa

from storage.duck import BASE_ROW_COLUMN, check_timestamp_range, sql_literal
from storage.properties import Catalog, discover, typed_select

_TS = pa.timestamp("us")
PROFILE_FILE_COLUMNS = ("user_id", "updated_at", "traits", "trait_times")  # then the t_<name> columns


def normalize_profiles_input(table: pa.Table | list[dict]) -> pa.Table:
    """(user_id string, traits JSON text, updated_at timestamp[us] naive UTC, __rn)."""
    if isinstance(table, list):
        table = pa.table({
            "user_id": [str(r["user_id"]) for r in table],
            "traits": [r["traits"] if isinstance(r["traits"], str) else orjson.dumps(r["traits"]).decode()
                       for r in table],
            "updated_at": pa.array([r["updated_at"] for r in table], type=_TS) if table else pa.array([], _TS),
        })
    missing = [c for c in ("user_id", "traits", "updated_at") if c not in table.column_names]
    if missing:
        raise ValueError(f"profiles table lacks columns {missing}")
    updated = table.column("updated_at")
    if not pa.types.is_timestamp(updated.type):
        raise ValueError(f"updated_at must be a timestamp column, got {updated.type}")
    if updated.null_count or table.column("user_id").null_count:
        raise ValueError("user_id and updated_at must not be null")
    updated = updated.cast(_TS, safe=False)
    check_timestamp_range(updated, "updated_at")
    return pa.table({
        "user_id": table.column("user_id").cast(pa.string()),
        "traits": table.column("traits").cast(pa.string()).fill_null("{}"),
        "updated_at": updated,
        "__rn": pa.array(np.arange(table.num_rows, dtype=np.int64)),
    })


def delta_rows_sql(base: str, changed: str, columns: list[str]) -> str:
    """The rows of the table ``changed`` (ours) as a delta over ``base`` (a DuckDB path):
    ``columns`` and each row's ``BASE_ROW_COLUMN``."""
    select = ", ".join(f'c."{column}"' for column in columns)
    return (f"SELECT {select}, b.file_row_number AS {BASE_ROW_COLUMN} FROM {changed} c "
            f"LEFT JOIN read_parquet([{sql_literal(base)}], hive_partitioning=false, file_row_number=true) b "
            f"ON b.user_id = c.user_id")


def merge_profiles(cur, existing: str | None, batch: pa.Table,
                   catalog: Catalog) -> tuple[str, dict, Catalog]:
    """(query producing the merged rows of the batch's users, its named parameters,
    extended catalog). ``existing``: the stored profiles (``duck.current_profiles_sql``), or
    None if there are none yet. Other users' rows are not part of the result.

    ``batch`` comes from ``normalize_profiles_input``; it is registered on ``cur`` as
    ``__pbatch`` (plus temp tables ``__stored`` and ``__fast``) and must stay so until the
    query has run.

    Fast path: a user new to the table with one identify in the batch keeps its traits
    text as sent. Everyone else goes through the per-trait merge (expand to one row per
    trait, pick the winner, regroup with sorted keys)."""
    cur.register("__pbatch", batch)
    catalog = discover(cur, "__pbatch", "traits", "__rn", catalog, "t_")
    params: dict = {}
    if existing is not None:  # the stored rows of the batch's users, read once
        cur.execute(f"CREATE OR REPLACE TEMP TABLE __stored AS SELECT o.user_id, o.updated_at, o.traits, "
                    f"o.trait_times FROM {existing} o SEMI JOIN __pbatch b ON o.user_id = b.user_id")
    stored_ids = ("SELECT user_id FROM __stored" if existing is not None
                  else "SELECT NULL::VARCHAR AS user_id WHERE false")
    cur.execute(f"""
        CREATE OR REPLACE TEMP TABLE __fast AS
        SELECT user_id FROM __pbatch GROUP BY user_id
        HAVING count(*) = 1 AND bool_and(json_type(traits) = 'OBJECT')
        EXCEPT {stored_ids}""", params)
    slow_batch = "(SELECT * FROM __pbatch b ANTI JOIN __fast f ON b.user_id = f.user_id)"
    if existing is not None:
        stored = f"(SELECT * FROM __stored o SEMI JOIN {slow_batch} b ON o.user_id = b.user_id)"
        old_long = f"""
            SELECT o.user_id, v.key AS trait, v.value::VARCHAR AS value, t.value::BIGINT AS ts, 0 AS prio
            FROM {stored} o, json_each(o.traits) v, json_each(o.trait_times) t
            WHERE v.key = t.key"""
        old_updated = f"SELECT user_id, updated_at FROM {stored}"
    else:
        old_long = ("SELECT NULL::VARCHAR AS user_id, NULL::VARCHAR AS trait, NULL::VARCHAR AS value, "
                    "NULL::BIGINT AS ts, 0 AS prio WHERE false")
        old_updated = "SELECT NULL::VARCHAR AS user_id, NULL::TIMESTAMP AS updated_at WHERE false"
    new_long = f"""
        SELECT b.user_id, v.key AS trait, v.value::VARCHAR AS value, epoch_us(b.updated_at) AS ts, b.__rn + 1 AS prio
        FROM {slow_batch} b, json_each(b.traits) v
        WHERE json_type(b.traits) = 'OBJECT'"""
    merged = f"""
        WITH winners AS (
            SELECT user_id, trait, max_by(value, (ts, prio)) AS value, max(ts) AS ts
            FROM ({old_long} UNION ALL {new_long}) GROUP BY user_id, trait),
        grouped AS (
            SELECT user_id,
                   '{{' || string_agg(to_json(trait)::VARCHAR || ':' || value, ',' ORDER BY trait) || '}}' AS traits,
                   '{{' || string_agg(to_json(trait)::VARCHAR || ':' || ts, ',' ORDER BY trait) || '}}' AS trait_times
            FROM winners GROUP BY user_id),
        seen AS (
            SELECT user_id, max(updated_at) AS updated_at
            FROM (SELECT user_id, updated_at FROM {slow_batch} UNION ALL {old_updated}) GROUP BY user_id)
        SELECT s.user_id, s.updated_at, coalesce(g.traits, '{{}}') AS traits,
               coalesce(g.trait_times, '{{}}') AS trait_times
        FROM seen s LEFT JOIN grouped g USING (user_id)
        UNION ALL
        SELECT b.user_id, b.updated_at, b.traits,
               '{{' || array_to_string(list_transform(list_distinct(json_keys(b.traits)),
                   k -> to_json(k)::VARCHAR || ':' || epoch_us(b.updated_at)), ',') || '}}' AS trait_times
        FROM __pbatch b SEMI JOIN __fast f ON b.user_id = f.user_id"""
    query, typed_params = typed_select(catalog, merged, "traits", ["user_id", "updated_at", "traits", "trait_times"])
    params.update(typed_params)
    return query, params, catalog
