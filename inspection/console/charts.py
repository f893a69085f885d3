"""Altair charts and the small aggregations behind them for the Analytics page."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from inspection.defect_style import GRADE_COLOURS, NOT_GRADED_COLOUR

PROCESS_PARAMS = {"finishing_temp_c": "finishing temperature (°C)",
                  "coiling_temp_c": "coiling temperature (°C)", "speed_m_per_s": "line speed (m/s)"}
_PERIODS = {"day": "D", "week": "W", "month": "M"}


def pareto(frame: pd.DataFrame) -> alt.LayerChart:
    """Bars of counts per class, largest first, and the cumulative share as a line on its own axis."""
    order = frame["class"].tolist()
    base = alt.Chart(frame).encode(x=alt.X("class:N", sort=order, title=None))
    bars = base.mark_bar().encode(y=alt.Y("count:Q", title="defects"),
                                  tooltip=["class", "count", alt.Tooltip("share:Q", format=".1%")])
    line = base.mark_line(point=True, color="#d62728").encode(
        y=alt.Y("cumulative:Q", title="cumulative share", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("cumulative:Q", format=".1%")])
    return alt.layer(bars, line).resolve_scale(y="independent").properties(height=300)


def rate_over_time(coils: pd.DataFrame, group: str, bucket: str) -> pd.DataFrame:
    """Defects per 1,000 m per time bucket and group (sum of defects over sum of length)."""
    known = coils.dropna(subset=["length_m"])
    known = known[known["length_m"] > 0]
    if not len(known):
        return pd.DataFrame(columns=["period", group, "defects_per_1000m", "coils"])
    periods = known["day"].dt.to_period(_PERIODS[bucket]).dt.start_time
    grouped = known.assign(period=periods, **{group: known[group].fillna("unknown")}).groupby(
        ["period", group], as_index=False).agg(defects=("defects", "sum"), length_m=("length_m", "sum"),
                                               coils=("coil", "count"))
    grouped["defects_per_1000m"] = grouped["defects"] / grouped["length_m"] * 1000
    return grouped


def rate_chart(trend: pd.DataFrame, group: str, bucket: str) -> alt.Chart:
    return alt.Chart(trend).mark_line(point=True).encode(
        x=alt.X("period:T", title=bucket), y=alt.Y("defects_per_1000m:Q", title="defects per 1,000 m"),
        color=alt.Color(f"{group}:N", title=group.replace("_", " ")),
        tooltip=["period:T", f"{group}:N", alt.Tooltip("defects_per_1000m:Q", format=".1f"), "coils:Q"],
    ).properties(height=300)


def rate_totals(coils: pd.DataFrame, group: str) -> pd.DataFrame:
    known = coils[coils["length_m"].fillna(0) > 0]
    totals = known.assign(**{group: known[group].fillna("unknown")}).groupby(group, as_index=False).agg(
        coils=("coil", "count"), defects=("defects", "sum"), length_m=("length_m", "sum"))
    totals["defects_per_1000m"] = totals["defects"] / totals["length_m"] * 1000
    return totals.sort_values("defects_per_1000m", ascending=False)


def process_scatter(coils: pd.DataFrame, param: str) -> alt.LayerChart:
    points = alt.Chart(coils).mark_circle(size=60, opacity=0.7).encode(
        x=alt.X(f"{param}:Q", title=PROCESS_PARAMS[param], scale=alt.Scale(zero=False)),
        y=alt.Y("defects_per_km:Q", title="defects per 1,000 m"),
        color=alt.Color("steel_grade:N", title="steel grade"),
        tooltip=["coil", "steel_grade", "customer", alt.Tooltip(f"{param}:Q", format=".1f"),
                 alt.Tooltip("defects_per_km:Q", format=".1f")])
    fit = (alt.Chart(coils).transform_regression(param, "defects_per_km")
           .mark_line(color="black", strokeDash=[4, 3]).encode(x=f"{param}:Q", y="defects_per_km:Q"))
    return alt.layer(points, fit).properties(height=300)


def with_wilson(frame: pd.DataFrame, z: float = 1.96) -> pd.DataFrame:
    """Add a 95% Wilson score interval (low, high) for precision = confirmed / reviewed."""
    lows, highs = [], []
    for confirmed, n in zip(frame["confirmed"], frame["reviewed"], strict=True):
        if not n:
            lows.append(None)
            highs.append(None)
            continue
        p = confirmed / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        lows.append(max(0.0, centre - half))
        highs.append(min(1.0, centre + half))
    return frame.assign(low=lows, high=highs)


def precision_chart(frame: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(frame).encode(y=alt.Y("class:N", title=None))
    bars = base.mark_bar(opacity=0.7).encode(
        x=alt.X("precision:Q", scale=alt.Scale(domain=[0, 1]), title="precision"),
        tooltip=["class", "confirmed", "relabelled", "rejected", "reviewed",
                 alt.Tooltip("precision:Q", format=".2f")])
    whiskers = base.mark_rule(color="black").encode(x="low:Q", x2="high:Q")
    return alt.layer(bars, whiskers).properties(height=max(120, 28 * len(frame)))


def outcomes_chart(frame: pd.DataFrame) -> alt.Chart:
    long = frame.melt(id_vars=["model_version"], value_vars=["confirmed", "relabelled", "rejected"],
                      var_name="outcome", value_name="reviews")
    return alt.Chart(long).mark_bar().encode(
        y=alt.Y("model_version:N", title="model version"), x=alt.X("reviews:Q", stack="normalize",
                                                                     title="share of reviews",
                                                                     axis=alt.Axis(format="%")),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=["confirmed", "relabelled", "rejected"],
                                                     range=["#2ca02c", "#ff7f0e", "#d62728"])),
        tooltip=["model_version", "outcome", "reviews"]).properties(height=max(120, 40 * len(frame)))


def recent_coils(coils: pd.DataFrame) -> alt.Chart:
    """Defects per coil for the latest coils, oldest left, coloured by grade."""
    frame = coils.assign(grade=coils["grade"].fillna("not graded"))
    order = frame.sort_values("first_seen")["coil"].tolist()
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("coil:N", sort=order, title=None), y=alt.Y("defects:Q", title="defects (all detections)"),
        color=alt.Color("grade:N", scale=alt.Scale(domain=[*GRADE_COLOURS, "not graded"],
                                                   range=[*GRADE_COLOURS.values(), NOT_GRADED_COLOUR])),
        tooltip=["coil", "grade", "defects", alt.Tooltip("coverage:Q", format=".1%"), "steel_grade", "customer"],
    ).properties(height=220)
