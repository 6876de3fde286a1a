"""pandas over the lake's Parquet files: hand-written equivalents of the suite.

Each query reads only the days it needs (files chosen from the snapshot's per-day
entries), only the columns it needs, with the event-type and time predicates pushed
into the Parquet reader (pyarrow), then works in pandas. Run at small and 10m only.
"""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads

from benchmarks.engines.base import Engine
from benchmarks.suite import SuiteSegment


class PandasEngine(Engine):
    name = "pandas"
    label = "pandas"
    max_events = 10_000_000  # in-memory frames: not run on the 100m dataset

    def events(self, columns: list[str], event_types: list[str] | None = None, days: int | None = None,
               *, inclusive_start: bool = False, extra=None) -> pd.DataFrame:
        """The tenant's events up to as_of (optionally the last ``days``) as a DataFrame."""
        ds = self.dataset
        start = ds.days_before(days) if days is not None else None
        files = ds.snapshot.files_between(start.date() if start else None, ds.as_of.date())
        keep = pc.field("occurred_at") <= pd.Timestamp(ds.as_of)
        if start is not None:
            bound = pd.Timestamp(start)
            keep &= (pc.field("occurred_at") >= bound) if inclusive_start else (pc.field("occurred_at") > bound)
        if event_types is not None:
            keep &= pc.field("event_type").isin(event_types)
        if extra is not None:
            keep &= extra
        table = pads.dataset(list(files), format="parquet").to_table(columns=columns, filter=keep)
        return table.to_pandas()

    def p(self, name: str) -> str:
        return self.dataset.property_column(name)

    def t(self, name: str) -> str:
        return self.dataset.trait_column(name)

    def profiles(self, columns: list[str]) -> pd.DataFrame:
        return pd.read_parquet(self.dataset.profiles.file, columns=["user_id", *columns])

    # -- the suite (each returns a Series or Index of user ids) ---------------------------
    def high_value_churners(self):
        df = self.events(["user_id", "event_type", "occurred_at", self.p("total")], ["order_placed", "page_viewed"])
        orders = df[df["event_type"] == "order_placed"].groupby("user_id")[self.p("total")].sum()
        views = df[(df["event_type"] == "page_viewed") & (df["occurred_at"] >= self.dataset.days_before(30))]
        rich = orders[orders >= 500].index
        return rich.difference(pd.Index(views["user_id"].unique()))

    def frequent_viewers_30d(self):
        counts = self.events(["user_id"], ["product_viewed"], 30)["user_id"].value_counts()
        return counts[counts >= 5].index

    def big_spenders_90d(self):
        spent = self.events(["user_id", self.p("total")], ["order_placed"], 90).groupby("user_id")[self.p("total")].sum()
        return spent[spent >= 1000].index

    def high_average_order(self):
        average = self.events(["user_id", self.p("total")], ["order_placed"]).groupby("user_id")[self.p("total")].mean()
        return average[average >= 150].index

    def recent_openers_7d(self):
        return pd.Index(self.events(["user_id"], ["email_opened"], 7)["user_id"].unique())

    def new_users_30d(self):
        first = self.events(["user_id", "occurred_at"]).groupby("user_id")["occurred_at"].min()
        return first[first > self.dataset.days_before(30)].index

    def pro_in_core_markets(self):
        df = self.profiles([self.t("country"), self.t("plan")])
        return df.loc[df[self.t("country")].isin(["US", "CA", "GB"]) & (df[self.t("plan")] == "pro"), "user_id"]

    def view_cart_order_7d(self):
        df = self.events(["user_id", "event_type", "occurred_at"], ["product_viewed", "added_to_cart", "order_placed"])
        df = df.sort_values("occurred_at", kind="stable")

        def step(event_type: str, name: str) -> pd.DataFrame:
            return df.loc[df["event_type"] == event_type, ["user_id", "occurred_at"]].rename(
                columns={"occurred_at": name})

        carts = pd.merge_asof(step("added_to_cart", "cart_at"), step("product_viewed", "chain_start"),
                              left_on="cart_at", right_on="chain_start", by="user_id",
                              allow_exact_matches=False).dropna(subset=["chain_start"])
        orders = pd.merge_asof(step("order_placed", "order_at"), carts, left_on="order_at", right_on="cart_at",
                               by="user_id", allow_exact_matches=False)
        hits = orders[orders["order_at"] <= orders["chain_start"] + timedelta(days=7)]
        return pd.Index(hits["user_id"].unique())

    def unengaged_or_lapsed_free(self):
        ds = self.dataset
        df = self.events(["user_id", "event_type", "occurred_at"])
        everyone = pd.Index(df["user_id"].unique())
        profile = self.profiles([self.t("plan")])
        everyone = everyone.union(pd.Index(profile["user_id"]))
        opened = df.loc[(df["event_type"] == "email_opened") & (df["occurred_at"] > ds.days_before(30)), "user_id"]
        ordered = df.loc[(df["event_type"] == "order_placed") & (df["occurred_at"] >= ds.days_before(60)), "user_id"]
        free = pd.Index(profile.loc[profile[self.t("plan")] == "free", "user_id"])
        unengaged = everyone.difference(pd.Index(opened.unique()))
        lapsed_free = free.difference(pd.Index(ordered.unique()))
        return unengaged.union(lapsed_free)

    def recent_buyers_not_big_spenders(self):
        df = self.events(["user_id", "occurred_at", self.p("total")], ["order_placed"], 90)
        grouped = df.assign(recent=df["occurred_at"] > self.dataset.days_before(30)).groupby("user_id")
        stats = grouped.agg(recent=("recent", "sum"), spent=(self.p("total"), "sum"))
        return stats[(stats["recent"] >= 1) & (stats["spent"] < 1000)].index

    def repeat_eur_buyers_60d(self):
        counts = self.events(["user_id"], ["order_placed"], 60,
                             extra=pc.field(self.p("currency")) == "EUR")["user_id"].value_counts()
        return counts[counts >= 2].index

    def occasional_clickers_14d(self):
        counts = self.events(["user_id"], ["email_clicked"], 14)["user_id"].value_counts()
        return counts[counts.between(2, 5)].index

    # -- engine API ----------------------------------------------------------------------
    def count(self, segment: SuiteSegment) -> int:
        return len(getattr(self, segment.name)())

    def members(self, segment: SuiteSegment) -> list[str]:
        return list(getattr(self, segment.name)())
