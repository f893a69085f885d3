"""Line: live status of each line, refreshed every few seconds inside a fragment (no page flicker)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from inspection.console import charts, data, stats, widgets
from inspection.console.context import change_token, page_database, sources
from inspection.console.models_view import active_models
from inspection.console.navigation import open_coil

REFRESH_S = 3.0
STALE_S = 15.0  # a process whose status is older than this is shown as not reporting
RECENT_COILS = 30

st.title("Line")
path, _ = page_database()


def _age_s(updated: str | None) -> float | None:
    if not updated:
        return None
    return time.time() - pd.Timestamp(updated).timestamp()


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    status = stats.line_status(path)
    registry = active_models()
    if not status["lines"]:
        st.info("No line has recorded anything in this database yet.")
    for line in status["lines"]:
        with st.container(border=True):
            st.subheader(f"{line['line']} ({line['type']})")
            recorder = line.get("recorder") or {}
            age = _age_s(recorder.get("updated"))
            live_now = age is not None and age <= STALE_S
            fps = float(recorder.get("frames_per_s") or 0.0) if live_now else 0.0
            mpx = fps * line["megapixels_per_frame"] if line.get("megapixels_per_frame") else None
            cover = line.get("coverage") or {}
            dropped = sum(c["dropped_worker"] + c["dropped_camera"] for c in cover.get("cameras", []))
            cols = st.columns([1.8, 0.9, 0.8, 0.8, 1.5, 1])  # coil ids are long; "100.00%" must not be cut
            cols[0].metric("Current coil", line["current_coil"] or "-")
            position = line["position_m"]
            cols[1].metric("Position", f"{position:.1f} m" if position is not None else "-")
            cols[2].metric("Frames/s", f"{fps:.1f}", help="recorder figure over its last status interval")
            cols[3].metric("Mpx/s", f"{mpx:.1f}" if mpx is not None else "-")
            ended = bool(cover.get("cameras")) and all(c["ended"] for c in cover["cameras"])
            cols[4].metric("Coverage", f"{cover['share']:.2%}" if ended else "running" if cover else "-",
                           help="inspected share of the current coil, worst camera, once the coil ended on "
                                "every camera")
            cols[5].metric("Dropped frames", dropped)
            in_use = ", ".join(m["version"] for m in line["models"]) or "-"
            st.caption(f"Model in use on the current coil: **{in_use}** · registry active for "
                       f"{line['type']}: **{registry.get(line['type']) or 'none'}**")
            if recorder:
                _recorder_caption(recorder, age, live_now)
            else:
                st.caption("No recorder status in this database (the line is not running).")
            _cameras(cover.get("cameras", []))
    _critical(status.get("critical", []))
    _recent_coils()
    _processes(status["status"])
    _alarms(status["alarms"])
    st.caption(f"Refreshed {time.strftime('%H:%M:%S')} UTC, every {REFRESH_S:.0f} s.")


def _recorder_caption(recorder: dict, age: float | None, live_now: bool) -> None:
    if live_now:
        state = "reporting"
    else:
        state = f"**not reporting** (last status {age:.0f} s ago)" if age is not None else "no status"
    pending = ", ".join(recorder.get("pending_coils") or []) or "none"
    error = f" · last error: {recorder['last_error']}" if recorder.get("last_error") else ""
    st.caption(f"Recorder pid {recorder.get('pid')} {state} · {recorder.get('messages', 0)} messages, "
               f"{recorder.get('rejected', 0)} rejected · pending coils {pending}{error}")


def _cameras(cameras: list[dict]) -> None:
    """One row per camera of the current coil: what arrived, what was inspected, what was lost."""
    if not cameras:
        return
    st.dataframe(pd.DataFrame([{
        "camera": c["camera"], "surface": c["surface"], "frames inspected": c["inspected"],
        "dropped by workers": c["dropped_worker"], "not sent by the camera": c["dropped_camera"],
        "coil ended": "yes" if c["ended"] else "no", "coverage": c["share"]} for c in cameras]),
        hide_index=True, column_config={"coverage": st.column_config.NumberColumn(format="percent")})


def _critical(defects: list[dict]) -> None:
    """The newest critical or unknown defects, crops first: what an inspector must look at now."""
    st.subheader("Latest critical and unknown defects")
    if not defects:
        st.caption("None recorded.")
        return
    crops_dir = sources().crops_dir
    for column, d in zip(st.columns(len(defects)), defects, strict=True):
        with column:
            widgets.crop_image(crops_dir, d["crop_sha256"], width=140)
            st.caption(f"#{d['id']} **{d['class']}** sev {d['severity']} · {d['score']:.2f}  \n"
                       f"coil {d['coil']} · {d['surface']} · {d['along_mm'] / 1000:.1f} m  \n{d['time'] or ''}")
            if st.button("Open coil", key=f"line_open_{d['id']}"):
                open_coil(d["coil"])


def _recent_coils() -> None:
    st.subheader("Recent coils")
    recent = data.coils(path, change_token(path), (), limit=RECENT_COILS)
    if len(recent):
        st.altair_chart(charts.recent_coils(recent), width="stretch")
    else:
        st.caption("No coil yet.")


def _processes(status: dict) -> None:
    rows = []
    for key, value in sorted(status.items()):
        value = value if isinstance(value, dict) else {"value": value}
        age = _age_s(value.get("updated"))
        rows.append({"process": key, "state": "ok" if age is not None and age <= STALE_S else "stale",
                     "last status (s ago)": round(age, 1) if age is not None else None,
                     "pid": value.get("pid"), "details": widgets.process_details(value)})
    st.subheader("Processes")
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    else:
        st.caption("No process has reported status.")


def _alarms(alarms: list[dict]) -> None:
    st.subheader("Recent alarms")
    if not alarms:
        st.caption("No alarms.")
        return
    frame = pd.DataFrame(alarms)[["time", "coil", "kind", "message"]]
    st.dataframe(frame, hide_index=True)


live()
