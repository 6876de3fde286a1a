"""Polars lazy queries over the lake's Parquet files: hand-written equivalents of the suite.

``scan_parquet`` with hive partitioning over exactly the snapshot's files, so the
``event_date`` predicates prune whole days and column projection and predicates push
down into the scan; sequences use ``join_asof`` per user.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import polars as pl

from benchmarks.engines.base import Engine
from benchmarks.suite import SuiteSegment

_KIND_DTYPES = {"number": pl.Float64, "string": pl.String, "boolean": pl.Boolean}
_BASE_SCHEMA = {"event_id": pl.String, "user_id": pl.String, "event_type": pl.String,
                "occurred_at": pl.Datetime("us"), "received_at": pl.Datetime("us"), "properties": pl.String}
HIVE_SCHEMA = {"tenant_id": pl.Int64, "event_date": pl.Date}

type_ = pl.col("event_type")
at = pl.col("occurred_at")


class PolarsEngine(Engine):
    name = "polars"
    label = "Polars (lazy)"

    def setup(self) -> dict[str, float]:
        ds = self.dataset
        schema = dict(_BASE_SCHEMA)
        schema.update({col: _KIND_DTYPES[kind] for col, kind in ds.snapshot.properties.values()})
        self._events = pl.scan_parquet(list(ds.snapshot.files), hive_partitioning=True, hive_schema=HIVE_SCHEMA,
                                       schema=schema, missing_columns="insert")
        self._profiles = pl.scan_parquet(ds.profiles.file, hive_partitioning=True,
                                         hive_schema={"tenant_id": pl.Int64})
        return {}

    # -- building blocks ---------------------------------------------------------------
    def events(self, days: int | None = None, *, inclusive_start: bool = False) -> pl.LazyFrame:
        """The tenant's events up to as_of, optionally only the last ``days``."""
        ds = self.dataset
        keep = (pl.col("tenant_id") == ds.tenant_id) & (at <= ds.as_of)
        if days is None:
            keep &= pl.col("event_date") <= ds.as_of.date()
        else:
            start = ds.days_before(days)
            keep &= (at >= start) if inclusive_start else (at > start)
            keep &= pl.col("event_date").is_between(start.date(), ds.as_of.date())
        return self._events.filter(keep)

    def profiles(self) -> pl.LazyFrame:
        return self._profiles.filter(pl.col("tenant_id") == self.dataset.tenant_id)

    def p(self, name: str) -> pl.Expr:
        return pl.col(self.dataset.property_column(name))

    def t(self, name: str) -> pl.Expr:
        return pl.col(self.dataset.trait_column(name))

    # -- the suite -----------------------------------------------------------------------
    def high_value_churners(self) -> pl.LazyFrame:
        return (self.events().filter(type_.is_in(["order_placed", "page_viewed"]))
                .group_by("user_id")
                .agg(spent=self.p("total").filter(type_ == "order_placed").sum(),
                     recent_views=((type_ == "page_viewed") & (at >= self.dataset.days_before(30))).sum())
                .filter((pl.col("spent") >= 500) & (pl.col("recent_views") == 0)))

    def frequent_viewers_30d(self) -> pl.LazyFrame:
        return (self.events(30).filter(type_ == "product_viewed")
                .group_by("user_id").len().filter(pl.col("len") >= 5))

    def big_spenders_90d(self) -> pl.LazyFrame:
        return (self.events(90).filter(type_ == "order_placed")
                .group_by("user_id").agg(spent=self.p("total").sum()).filter(pl.col("spent") >= 1000))

    def high_average_order(self) -> pl.LazyFrame:
        return (self.events().filter(type_ == "order_placed")
                .group_by("user_id").agg(average=self.p("total").mean()).filter(pl.col("average") >= 150))

    def recent_openers_7d(self) -> pl.LazyFrame:
        return self.events(7).filter(type_ == "email_opened").select("user_id").unique()

    def new_users_30d(self) -> pl.LazyFrame:
        return (self.events().group_by("user_id").agg(first=at.min())
                .filter(pl.col("first") > self.dataset.days_before(30)))

    def pro_in_core_markets(self) -> pl.LazyFrame:
        return self.profiles().filter(self.t("country").is_in(["US", "CA", "GB"]) & (self.t("plan") == "pro"))

    def view_cart_order_7d(self) -> pl.LazyFrame:
        steps = (self.events().filter(type_.is_in(["product_viewed", "added_to_cart", "order_placed"]))
                 .select("user_id", "event_type", "occurred_at"))

        def step(event_type: str, name: str) -> pl.LazyFrame:
            return steps.filter(type_ == event_type).select("user_id", at.alias(name)).sort(name)

        carts = (step("added_to_cart", "cart_at")
                 .join_asof(step("product_viewed", "chain_start"), left_on="cart_at", right_on="chain_start",
                            by="user_id", allow_exact_matches=False, check_sortedness=False)
                 .drop_nulls("chain_start").sort("cart_at"))
        return (step("order_placed", "order_at")
                .join_asof(carts, left_on="order_at", right_on="cart_at", by="user_id", allow_exact_matches=False,
                           check_sortedness=False)
                .filter(pl.col("order_at") <= pl.col("chain_start") + timedelta(days=7))
                .select("user_id").unique())

    def unengaged_or_lapsed_free(self) -> pl.LazyFrame:
        ds = self.dataset
        activity = self.events().group_by("user_id").agg(
            opened=((type_ == "email_opened") & (at > ds.days_before(30))).sum(),
            ordered=((type_ == "order_placed") & (at >= ds.days_before(60))).sum())
        profile = self.profiles().select("user_id", self.t("plan").alias("plan"))
        everyone = activity.join(profile, on="user_id", how="full", coalesce=True)
        return everyone.filter((pl.col("opened").fill_null(0) == 0)
                               | ((pl.col("plan") == "free") & (pl.col("ordered").fill_null(0) == 0)))

    def recent_buyers_not_big_spenders(self) -> pl.LazyFrame:
        return (self.events(90).filter(type_ == "order_placed")
                .group_by("user_id")
                .agg(recent=(at > self.dataset.days_before(30)).sum(), spent=self.p("total").sum())
                .filter((pl.col("recent") >= 1) & (pl.col("spent") < 1000)))

    def repeat_eur_buyers_60d(self) -> pl.LazyFrame:
        return (self.events(60).filter((type_ == "order_placed") & (self.p("currency") == "EUR"))
                .group_by("user_id").len().filter(pl.col("len") >= 2))

    def occasional_clickers_14d(self) -> pl.LazyFrame:
        return (self.events(14).filter(type_ == "email_clicked")
                .group_by("user_id").len().filter(pl.col("len").is_between(2, 5)))

    # -- engine API ----------------------------------------------------------------------
    def query(self, segment: SuiteSegment) -> pl.LazyFrame:
        build: Callable[[], pl.LazyFrame] = getattr(self, segment.name)
        return build().select("user_id")

    def count(self, segment: SuiteSegment) -> int:
        return self.query(segment).select(pl.len()).collect().item()

    def members(self, segment: SuiteSegment) -> list[str]:
        return self.query(segment).collect()["user_id"].to_list()
