"""The Models page's shadow section: what a candidate running in shadow would change if promoted.

Reads go through `inspection.records.shadow_reads`, cached on the database's change token like every
console read (`data`); crops come from the disagreement crop folder (`records.shadow.shadow_crop_store`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from inspection.console.context import change_token, read_db, sources
from inspection.records import shadow_reads
from inspection.records.shadow import shadow_crop_store
from inspection.shadow_results import KINDS

Token = tuple[int, ...]
KIND_LABELS = {"active_only": "found by the active model only (a promotion would lose these)",
               "shadow_only": "found by the shadow model only (a promotion would add these)",
               "other_class": "another class on the same defect"}
RUN_COLUMNS = {"active": "active", "shadow": "shadow", "frames": "frames compared",
               "frames_disagreeing": "frames with a disagreement", "active_only": "active only",
               "shadow_only": "shadow only", "other_class": "other class", "shadow_ms": "shadow ms / frame"}


@st.cache_data(show_spinner=False, max_entries=16)
def runs(path: str, token: Token) -> pd.DataFrame:
    with read_db(path) as db:
        rows = shadow_reads.runs(db)
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "disagreements", "active_defects", "shadow_defects",
                                       "first_ns", "last_ns"])


@st.cache_data(show_spinner=False, max_entries=16)
def counts(path: str, token: Token, active: str, shadow: str) -> pd.DataFrame:
    with read_db(path) as db:
        rows = shadow_reads.counts(db, active, shadow)
    return pd.DataFrame(rows, columns=["kind", "active_class", "shadow_class", "n", "mean_score"])


@st.cache_data(show_spinner=False, max_entries=16)
def sample(path: str, token: Token, active: str, shadow: str, per_kind: int) -> list[dict[str, Any]]:
    with read_db(path) as db:
        return shadow_reads.sample(db, active, shadow, per_kind=per_kind)


def show(snapshot: dict[str, Any], line_types: tuple[str, ...]) -> None:
    """The section: the registry's shadow per line type, then what the recorded runs disagreed on."""
    st.subheader("Shadow mode: what a promotion would change")
    st.caption("A candidate runs beside the active model on `[model] shadow_share` of the frames, without "
               "touching defects, grades or the PLC; set it with `steel-inspect models shadow VERSION` "
               "(`models shadow off --line-type hot` stops it). Boxes of the two overlapping by `[model] "
               "shadow_iou` are one defect.")
    cols = st.columns(len(line_types))
    for column, line_type in zip(cols, line_types, strict=True):
        column.metric(f"Shadow {line_type} model", snapshot["shadow"][line_type] or "none")
        since = snapshot["shadow_since"][line_type]
        if since:
            column.caption(f"since {since.get('time')} (by {since.get('by')}"
                           + (f": {since['reason']}" if since.get("reason") else "") + ")")
    database = sources().database
    if not database.is_file():
        st.caption(f"No line database at `{database}`: no shadow results to show.")
        return
    path, token = str(database), change_token(database)
    table = runs(path, token)
    if not len(table):
        st.info("No shadow results recorded yet.")
        return
    st.dataframe(table[list(RUN_COLUMNS)].rename(columns=RUN_COLUMNS), hide_index=True, column_config={
        "shadow ms / frame": st.column_config.NumberColumn(format="%.1f")})
    pairs = [f"{r.shadow} beside {r.active}" for r in table.itertuples()]
    choice = st.selectbox("Shadow run", pairs, index=0, key="shadow_pair")
    row = table.iloc[pairs.index(choice)]
    _pair(path, token, str(row["active"]), str(row["shadow"]), row)


def _pair(path: str, token: Token, active: str, shadow: str, row: pd.Series) -> None:
    frames = int(row["frames"])
    figures = st.columns(4)
    figures[0].metric("Frames compared", frames)
    for column, kind in zip(figures[1:], KINDS, strict=True):
        column.metric(kind.replace("_", " "), int(row[kind]),
                      help=KIND_LABELS[kind] + f"; {row[kind] / max(frames, 1):.2f} per frame")
    found = counts(path, token, active, shadow)
    st.markdown("**Disagreements per kind and class**")
    st.dataframe(found.rename(columns={"active_class": "active class", "shadow_class": "shadow class",
                                       "mean_score": "mean score"}), hide_index=True,
                 column_config={"mean score": st.column_config.NumberColumn(format="%.2f")})
    crops = shadow_crop_store(sources().crops_dir)
    items = sample(path, token, active, shadow, 8)
    for kind in KINDS:
        chosen = [i for i in items if i["kind"] == kind]
        if not chosen:
            continue
        st.markdown(f"**{KIND_LABELS[kind].capitalize()}**: a sample of {len(chosen)}")
        for start in range(0, len(chosen), 4):
            for column, item in zip(st.columns(4), chosen[start:start + 4], strict=False):
                data = crops.get(item["crop_sha256"]) if crops is not None and item["crop_sha256"] else None
                caption = _caption(item)
                if data is None:
                    column.caption(f"{caption} (no crop stored)")
                else:
                    column.image(data, width=160, caption=caption)


def _caption(item: dict[str, Any]) -> str:
    sides = []
    if item["active_class"]:
        sides.append(f"active: {item['active_class']} {item['active_score']:.2f}")
    if item["shadow_class"]:
        sides.append(f"shadow: {item['shadow_class']} {item['shadow_score']:.2f}")
    return f"{' / '.join(sides)} · coil {item['coil']} {item['surface']} at {item['along_mm'] / 1000:.2f} m"
