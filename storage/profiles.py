"""Profile merge: the latest value of every trait per user, kept as a table.

Segment queries read traits from this table; they never reconstruct them with
arg_max over all identify events.

The profiles file has one row per user: ``user_id``, ``updated_at`` (latest identify
seen), ``traits`` (JSON object of the winning values, keys sorted), ``trait_times``
(JSON object trait -> epoch microseconds of the winning value) and typed
``t_<name>`` columns (same typing rules as event properties, storage/properties.py).

The table is a base file plus at most one delta file holding the current rows of
users changed since the base was written (a delta row replaces the user's base row;
``current_profiles``, the one form of that rule: the writer's merge and every query backend
read it). An identify flush merges its batch into the rows of the users in it and rewrites only the
delta; the base is rewritten once the delta grows past a fraction of it (``storage/lake.py``,
``upsert_profiles``). Merging expands only the stored rows of the users in the batch, and a user new
to the table with a single identify in the batch is taken as sent (its traits text unchanged).
Per (user, trait) the value with the greatest
updated_at wins; on a tie the newer write wins (batch over stored, later batch row
over earlier). A trait set to JSON null is a value like any other (it wins by
time and reads NULL in its typed column).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
from sqlglot import exp

from storage.duck import BASE_ROW_COLUMN, check_timestamp_range, read_parquet
from storage.properties import Catalog, discover, typed_select

_TS = pa.timestamp("us")
PROFILE_FILE_COLUMNS = ("user_id", "updated_at", "traits", "trait_times")  # then the t_<name> columns
ROW_POSITION = "__file_row"  # a base leaf's 0-based row in its file (what BASE_ROW_COLUMN refers to)


def current_profiles(base: exp.Expression, delta: exp.Expression | None, columns: Sequence[str], *,
                     by_user_id: bool = False) -> exp.Subquery:
    """One row per user, ``columns`` of it: the rows of ``base``, each replaced by the row of
    ``delta`` that names it, and the delta's rows of users new since the base. A sqlglot tree
    over two leaf relations (any dialect renders it): ``base`` yields ``columns`` and, unless
    ``by_user_id``, ``ROW_POSITION``; ``delta`` yields ``columns`` and ``BASE_ROW_COLUMN``.

    A delta row carries ``BASE_ROW_COLUMN``, the position in the base of the row it replaces
    (NULL for a user new since the base). Excluding base rows by position is an anti join on
    integers, 2.55x faster on DuckDB than by user id (``benchmarks/bench_profiles.py``); the
    user id form gives the same rows (``delta_rows_sql`` takes the position from the base row of
    the same user, and user_id is unique per file) and serves leaves without row positions.
    The column list is explicit (no ``EXCLUDE``, no ``UNION BY NAME``)."""
    if delta is None:
        return select_columns(columns, base).subquery()
    base_on, delta_on = ("user_id", "user_id") if by_user_id else (ROW_POSITION, BASE_ROW_COLUMN)
    replaced = (exp.select(exp.column(delta_on, quoted=True)).from_(aliased(delta, "d0"))
                .where(exp.Not(this=exp.Is(this=exp.column(BASE_ROW_COLUMN, quoted=True), expression=exp.null())))
                .subquery("d"))
    kept = select_columns(columns, base, "o").join(replaced, join_type="anti", on=exp.EQ(
        this=exp.column(base_on, table="o", quoted=True), expression=exp.column(delta_on, table="d", quoted=True)))
    return exp.union(kept, select_columns(columns, delta), distinct=False).subquery()


def stored_profiles_sql(base: str, delta: str | None) -> str:
    """``current_profiles`` of the files ``base`` and ``delta`` (DuckDB paths, ours), their
    ``PROFILE_FILE_COLUMNS``, as DuckDB SQL: the stored rows the writer's merge reads."""
    leaf = read_parquet([base], row_numbers=delta is not None)
    if delta is not None:
        leaf = exp.select(exp.Star(), exp.alias_(exp.column("file_row_number"), ROW_POSITION, quoted=True)
                          ).from_(leaf).subquery()
    delta_leaf = read_parquet([delta]) if delta is not None else None
    return current_profiles(leaf, delta_leaf, PROFILE_FILE_COLUMNS).sql("duckdb")


def aliased(relation: exp.Expression, alias: str) -> exp.Expression:
    """``relation`` (a table, a subquery or a select) under the table alias ``alias``."""
    if isinstance(relation, exp.Select):
        return relation.subquery(alias)
    relation = relation.copy()
    relation.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return relation


def select_columns(names: Sequence[str], relation: exp.Expression, alias: str = "s") -> exp.Select:
    """``SELECT alias.name, ... FROM relation AS alias``."""
    return exp.select(*(exp.column(name, table=alias, quoted=True) for name in names)).from_(aliased(relation, alias))


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
            f"LEFT JOIN {read_parquet([base], row_numbers=True).sql('duckdb')} b ON b.user_id = c.user_id")


def merge_profiles(cur, existing: str | None, batch: pa.Table,
                   catalog: Catalog) -> tuple[str, dict, Catalog]:
    """(query producing the merged rows of the batch's users, its named parameters,
    extended catalog). ``existing``: the stored profiles (``stored_profiles_sql``), or
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
