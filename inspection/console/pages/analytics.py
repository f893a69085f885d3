"""Analytics: Pareto, defects per 1,000 m over time, defects vs process data, field quality from reviews."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from inspection.console import charts, stats
from inspection.console.context import page_database

st.title("Analytics")
path, token = page_database()
everything = stats.coil_stats(path, token, None, None)
if not len(everything):
    st.info("No defects recorded yet.")
    st.stop()

first, last = everything["day"].min().date(), everything["day"].max().date()
cols = st.columns([2, 1, 1])
picked = cols[0].date_input("Days (UTC)", value=(first, last), key="an_days")
group = cols[1].selectbox("Group by", ["line", "shift", "steel_grade", "customer"], key="an_group")
bucket = cols[2].selectbox("Time bucket", ["day", "week", "month"], key="an_bucket")
# The range picker returns () while empty and (start,) while the user is choosing the end.
since = picked[0] if len(picked) >= 1 else first
until = picked[1] if len(picked) == 2 else (since if len(picked) == 1 else last)
since_s, until_s = since.isoformat(), until.isoformat()
coils = stats.coil_stats(path, token, since_s, until_s)

st.subheader("Pareto of defect classes")
st.caption("After reviews: rejected false alarms are removed, relabelled defects count under their new "
           "class.")
pareto = stats.pareto(path, token, since_s, until_s, None)
if len(pareto):
    st.altair_chart(charts.pareto(pareto), width="stretch")
else:
    st.caption("No defects in this range.")

left, right = st.columns(2)
with left:
    st.subheader(f"Defects per 1,000 m by {group.replace('_', ' ')}")
    st.caption("All detections (before reviews), over the inspected length of each coil.")
    trend = charts.rate_over_time(coils, group, bucket)
    if len(trend):
        st.altair_chart(charts.rate_chart(trend, group, bucket), width="stretch")
        totals = charts.rate_totals(coils, group)
        st.dataframe(totals, hide_index=True, column_config={
            "defects_per_1000m": st.column_config.NumberColumn("defects / 1,000 m", format="%.1f")})
    else:
        st.caption("No coil with a known length in this range.")
with right:
    st.subheader("Defects against a process parameter")
    param = st.selectbox("Parameter", list(charts.PROCESS_PARAMS), format_func=charts.PROCESS_PARAMS.get,
                         key="an_param")
    known = coils.dropna(subset=[param, "defects_per_km"])
    if len(known):
        st.altair_chart(charts.process_scatter(known, param), width="stretch")
        st.caption(f"{len(known)} coil(s) with process data; the line is a least-squares fit.")
    else:
        st.caption("No coil in this range has this process value (import the plant's MES data).")

st.subheader("Field quality from reviews")
q_left, q_right = st.columns(2)
with q_left:
    st.markdown("**Estimated precision per class** (random-sample reviews only; 95% Wilson interval)")
    precision = charts.with_wilson(stats.field_precision(path, token))
    if len(precision):
        st.altair_chart(charts.precision_chart(precision), width="stretch")
        st.dataframe(precision, hide_index=True, column_config={
            "precision": st.column_config.NumberColumn(format="%.2f"),
            "low": st.column_config.NumberColumn(format="%.2f"),
            "high": st.column_config.NumberColumn(format="%.2f")})
    else:
        st.caption("No sampled defect has been reviewed yet.")
with q_right:
    st.markdown("**Review outcomes per model version** (latest review of each reviewed defect)")
    by_model = stats.confirmations_by_model(path, token)
    if len(by_model):
        st.altair_chart(charts.outcomes_chart(by_model), width="stretch")
        st.dataframe(by_model.drop(columns=["model_sha256"]), hide_index=True, column_config={
            "confirmed_share": st.column_config.NumberColumn("confirmed share", format="percent")})
    else:
        st.caption("No review yet.")
st.caption(f"Range {since_s} .. {until_s}; figures are recomputed when the database changes "
           f"(as of {dt.datetime.now(dt.UTC):%H:%M:%S} UTC).")
