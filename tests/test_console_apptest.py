"""The review console, page by page, through Streamlit's AppTest against a real line database.

The database is written through the records API (`inspection.testing.sample_db`: worker
messages through `Store.apply_batch`, MES import, grading, periodic detection, review queue) and
has console users of every role; a test signs in through the sidebar form as a user does. Reviews
made through the page widgets must land as review rows, in the signed-in user's name, with an
intact audit chain.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from inspection.console import browser_session, defect_map, map_data, session_cookie
from inspection.console.auth import ENDED, SESSION_KEY, Session, idle_expired
from inspection.console.launch import is_loopback
from inspection.passwords import ScryptParams
from inspection.records import audit, users
from inspection.records.crops import CropStore
from inspection.records.db import open_db
from inspection.records.store import Store
from inspection.registry import Registry
from inspection.testing.sample_db import SampleCoil, add_shadow_run, build
from tests.tiny_models import add_tiny_model

REPO = Path(__file__).resolve().parents[1]
PAGES = "inspection/console/pages"
COILS = (SampleCoil("C1001", 120.0, 40, periodic=True), SampleCoil("C1002", 80.0, 4),
         SampleCoil("C1003", 200.0, 300))
# name -> role; each one's password is f"{name}-password-1"
USERS = {"ana": "inspector", "bo": "quality_engineer", "cy": "quality_engineer", "mel": "ml_engineer"}
FAST = ScryptParams(n=2**12, r=8, p=1)  # sign-in checks with the stored parameters: cheap ones keep tests fast


@pytest.fixture(scope="module")
def line_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("line")
    build(folder / "line.db", folder / "crops", COILS, seed=3)
    with open_db(folder / "line.db") as db:
        for name, role in USERS.items():
            users.add_user(db, name, role, f"{name}-password-1", actor="test", params=FAST)
    return folder / "line.db"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    registry = Registry(root)
    add_tiny_model(registry, tmp_path_factory.mktemp("build"), classes=("crazing", "inclusion"),
                   version="hot-20261120-1")
    add_tiny_model(registry, tmp_path_factory.mktemp("build2"), classes=("crazing", "inclusion"),
                   version="hot-20261122-1")
    registry.promote("hot-20261120-1", by="ml-engineer", reason="first model")
    registry.promote("hot-20261122-1", by="ml-engineer", reason="better recall")
    return root


@pytest.fixture
def db(line_db: Path, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy per test (tests write reviews), with its crops, and the console pointed at it."""
    copy = tmp_path / "line.db"
    with sqlite3.connect(line_db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    (tmp_path / "crops").symlink_to(line_db.parent / "crops")
    monkeypatch.setenv("STEEL_INSPECT_DB", str(copy))
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(models_dir))
    monkeypatch.delenv("STEEL_INSPECT_CROPS", raising=False)
    return copy


def app(page: str | None = None, user: str | None = None, password: str | None = None,
        **state: object) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    if user:
        sign_in(at, user, password)
    for key, value in state.items():
        at.session_state[key] = value
    if page:
        at.switch_page(f"{PAGES}/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def sign_in(at: AppTest, name: str, password: str | None = None) -> None:
    """Type name and password into the sidebar form and press "Sign in", as a user does."""
    at.sidebar.text_input(key="sign_in_name").input(name)
    at.sidebar.text_input(key="sign_in_password").input(password or f"{name}-password-1")
    at.sidebar.button(key="sign_in_submit").click().run()
    assert not at.exception, at.exception


def signed_in_as(at: AppTest) -> str | None:
    return next((c.value.split("**")[1] for c in at.sidebar.caption if c.value.startswith("Signed in as")), None)


def texts(at: AppTest) -> str:
    elements = (*at.markdown, *at.caption, *at.title, *at.subheader, *at.warning, *at.error, *at.success,
                *at.info)
    parts = [e.value for e in elements]
    parts += [f"{m.label}={m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def rows(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def test_line_page_shows_the_line_its_current_coil_and_alarms(db: Path) -> None:
    at = app()
    shown = texts(at)
    assert "demo-hot-1 (hot)" in shown
    assert "Current coil=C1003" in shown  # the newest coil
    assert "hot-20261123-1" in shown  # the model that inspected it
    assert "hot-20261122-1" in shown  # the registry's active hot model
    alarms = at.dataframe[-1].value
    assert list(alarms["coil"]) == ["C1001"] and "periodic" in alarms["message"].iloc[0]
    assert len(at.get("vega_lite_chart")) == 1  # defects of the recent coils
    cameras = next(d.value for d in at.dataframe if "frames inspected" in d.value.columns)
    expected = rows(db, "SELECT camera, count(*) FROM frames WHERE coil = 'C1003' AND status = 'inspected' "
                        "GROUP BY camera ORDER BY camera")
    assert sorted(zip(cameras["camera"], cameras["frames inspected"], strict=True)) == expected
    critical = rows(db, "SELECT id FROM defects WHERE severity >= 3 OR class = 'unknown' ORDER BY id DESC LIMIT 6")
    assert critical, "the sample line has critical defects"
    shown = texts(at)
    assert "Latest critical and unknown defects" in shown
    assert all(f"#{defect_id} " in shown for (defect_id,) in critical)
    at.button(key=f"line_open_{critical[0][0]}").click().run()
    assert at.session_state["selected_coil"] == rows(db, "SELECT coil FROM defects WHERE id = ?", critical[0])[0][0]


def test_line_page_process_details_read_as_text() -> None:
    from inspection.console.widgets import process_details

    text = process_details({"pid": 7, "updated": "x", "messages": 1204, "frames_per_s": 12.345,
                            "pending_coils": ["C1", "C2"], "last_error": None, "curve": True})
    assert text == "messages 1,204 · frames/s 12.3 · pending coils C1, C2 · curve yes"


def test_coils_page_lists_filters_and_opens_a_coil(db: Path) -> None:
    at = app("coils")
    table = at.dataframe[0].value
    assert set(table["coil"]) == {"C1001", "C1002", "C1003"}
    grades = dict(rows(db, "SELECT coil, grade FROM grades"))
    assert dict(zip(table["coil"], table["grade"], strict=True)) == grades
    customer = rows(db, "SELECT customer FROM platform_coils WHERE coil_id = 'C1002'")[0][0]
    expected = {c for (c,) in rows(db, "SELECT coil_id FROM platform_coils WHERE customer = ?", (customer,))}
    at.selectbox(key="f_customer").select(customer).run()
    assert set(at.dataframe[0].value["coil"]) == expected
    at.selectbox(key="f_customer").select(None).run()
    at.text_input(key="f_coil").input("C100").run()
    assert len(at.dataframe[0].value) == 3
    at.text_input(key="f_coil").input("C1003").run()
    assert list(at.dataframe[0].value["coil"]) == ["C1003"]
    at.selectbox[-1].select("C1003")
    at.button(key="FormSubmitter:open_coil_form-Open coil").click().run()
    assert "Defects=300" in texts(at)


def test_signing_in_survives_opening_a_coil_and_the_review_carries_the_session_user(db: Path) -> None:
    at = app("coils")
    sign_in(at, "ANA", "ana-password-1")  # names are not case-sensitive; the stored spelling is recorded
    assert signed_in_as(at) == "ana"
    assert not at.sidebar.text_input  # no name box to type someone else's name into
    at.selectbox[-1].select("C1002")
    at.button(key="FormSubmitter:open_coil_form-Open coil").click().run()  # st.switch_page to the coil page
    assert at.title[0].value == "Coil detail"
    at.switch_page(f"{PAGES}/coil_detail.py")  # AppTest's next run() would go back to its own page
    defect_id = rows(db, "SELECT max(id) FROM defects WHERE coil = 'C1002'")[0][0]
    _select_defect(at, defect_id)
    at.button(key="detail_review_confirm").click().run()
    assert rows(db, "SELECT defect_id, reviewer, action FROM reviews") == [(defect_id, "ana", "confirm")]
    assert rows(db, "SELECT actor FROM audit_log WHERE kind = 'review'") == [("ana",)]


def test_coil_detail_shows_map_grade_plant_data_and_periodic_alarm(db: Path) -> None:
    at = app("coil_detail", selected_coil="C1001")
    shown = texts(at)
    assert "Defects=40" in shown and at.selectbox(key="detail_coil_box").value == "C1001"
    grade = rows(db, "SELECT grade FROM grades WHERE coil = 'C1001' ORDER BY id DESC LIMIT 1")[0][0]
    assert f"Grade={grade}" in shown
    assert "Periodic defect: periodic pitted_surface on top" in shown
    (the_map,) = at.get("component_instance")  # the canvas map: both surfaces, every defect, periodic lines
    meta = json.loads(the_map.proto.json_args)["meta"]
    assert meta["n"] == 40 and len(the_map.proto.special_args[0].bytes) == 40 * map_data.BYTES_PER_POINT
    assert [(p["surface"], p["cls"]) for p in meta["periodic"]] == [("top", "pitted_surface")]
    heat = rows(db, "SELECT heat FROM platform_coils WHERE coil_id = 'C1001'")[0][0]
    plant = next(m.value for m in at.markdown if m.value.startswith("| Field | Value |"))  # a Markdown table, no Arrow
    assert f"| Heat | {heat} |" in plant  # two fields per row
    source = rows(db, "SELECT source FROM platform_coils WHERE coil_id = 'C1001'")[0][0]
    assert "Source" not in plant and source and any(c.value.startswith("Source: ") for c in at.caption)
    assert not at.get("image") and not at.dataframe  # gallery, grade history, reviews: built when opened
    at.session_state["gallery_open"] = True  # the inspector opens the gallery
    at.run()
    assert len(at.get("image")) == 24  # first gallery page of 40 crops
    at.number_input(key="gallery_page").set_value(2).run()
    assert len(at.get("image")) == 16


def test_a_click_on_the_map_selects_its_defect_once(db: Path) -> None:
    at = app("coil_detail", user="bo", selected_coil="C1001")
    first, second = (r[0] for r in rows(db, "SELECT id FROM defects WHERE coil = 'C1001' ORDER BY id LIMIT 2"))
    at.session_state[defect_map.MAP_KEY] = {"id": first, "at": 1}  # what the canvas sends on a click
    at.run()
    assert f"#{first} " in texts(at) and at.text_input(key="defect_id_box").value == f"#{first}"
    assert json.loads(at.get("component_instance")[0].proto.json_args)["selected"] == first  # ringed on the map
    _select_defect(at, second)  # the id box; the map's last click must not take the selection back
    assert f"#{second} " in texts(at) and f"#{first} " not in texts(at)
    at.session_state[defect_map.MAP_KEY] = {"id": first, "at": 2}  # the same point clicked again
    at.run()
    assert f"#{first} " in texts(at)


def _select_defect(at: AppTest, defect_id: int) -> None:
    at.text_input(key="defect_id_box").input(str(defect_id)).run()
    assert not at.exception, at.exception


def test_review_is_refused_without_a_signed_in_user(db: Path) -> None:
    at = app("coil_detail", selected_coil="C1002")
    defect_id = rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0]
    _select_defect(at, defect_id)
    at.button(key="detail_review_reject").click().run()
    assert any("Action refused: sign in first (sidebar)" in e.value for e in at.error)
    assert rows(db, "SELECT count(*) FROM reviews") == [(0,)]


def test_reject_writes_an_audited_review_and_regrades_the_coil(db: Path) -> None:
    at = app("coil_detail", user="ana", selected_coil="C1002")
    defect_id = rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0]
    grades_before = rows(db, "SELECT count(*) FROM grades WHERE coil = 'C1002'")[0][0]
    _select_defect(at, defect_id)
    at.text_input(key="detail_review_reason").input("water stain, not a defect")
    at.button(key="detail_review_reject").click().run()
    assert not at.exception, at.exception
    assert rows(db, "SELECT defect_id, reviewer, action, reason FROM reviews") == [
        (defect_id, "ana", "reject", "water stain, not a defect")]
    regrade = rows(db, "SELECT trigger, defects_counted FROM grades WHERE coil = 'C1002' ORDER BY id")
    assert len(regrade) == grades_before + 1 and regrade[-1][0].startswith("review:") and regrade[-1][1] == 3
    assert rows(db, "SELECT actor FROM audit_log WHERE kind = 'review'") == [("ana",)]
    shown = texts(at)
    assert "rejected as false alarm" in shown and "Counted=3" in shown  # fresh data, not the cache
    with open_db(db, readonly=True) as conn:
        assert audit.verify(conn).ok


def test_relabel_and_grade_override_need_their_inputs(db: Path) -> None:
    at = app("coil_detail", user="bo", selected_coil="C1001")
    defect_id = rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1001' AND class != 'scratches'")[0][0]
    _select_defect(at, defect_id)
    at.selectbox(key="detail_review_class").select("scratches")
    at.button(key="detail_review_relabel").click().run()
    assert rows(db, "SELECT action, new_class, reviewer FROM reviews") == [
        ("relabel", "scratches", "bo")]
    assert any(e.label == "Reviews of this coil (1)" for e in at.expander)
    at.session_state["coil_reviews_open"] = True  # the inspector opens the list
    at.run()
    history = next(d.value for d in at.dataframe if "detected_as" in d.value.columns)
    assert history[["defect", "action", "new_class", "reviewer"]].values.tolist() == [
        [defect_id, "relabel", "scratches", "bo"]]
    at.selectbox(key="override_grade").select("secondary")
    at.text_area(key="override_reason").input("   ")
    at.button(key="FormSubmitter:override_form-Override grade").click().run()
    assert any("needs a reason" in e.value for e in at.error)
    assert rows(db, "SELECT count(*) FROM grade_overrides") == [(0,)]
    at.selectbox(key="override_grade").select("secondary")
    at.text_area(key="override_reason").input("customer accepts edge marks (claim 42)")
    at.button(key="FormSubmitter:override_form-Override grade").click().run()
    assert rows(db, "SELECT grade, reviewer, reason FROM grade_overrides") == [
        ("secondary", "bo", "customer accepts edge marks (claim 42)")]
    assert "Grade=secondary" in texts(at)
    assert rows(db, "SELECT actor FROM audit_log WHERE kind = 'grade_override'") == [("bo",)]
    with open_db(db, readonly=True) as conn:
        assert audit.verify(conn).ok


def test_review_queue_shows_the_top_item_and_records_a_confirmation(db: Path) -> None:
    top = rows(db, "SELECT defect_id FROM review_queue ORDER BY priority DESC, defect_id LIMIT 1")[0][0]
    queued = rows(db, "SELECT count(*) FROM review_queue")[0][0]
    not_queued = rows(db, "SELECT count(*) FROM defects WHERE id NOT IN (SELECT defect_id FROM review_queue)")[0][0]
    at = app("review_queue", user="cy")
    assert f"Reviewed=0 of {queued}" in texts(at) and f"Not queued={not_queued}" in texts(at)
    assert f"#{top} " in texts(at)
    at.button(key="queue_review_confirm").click().run()
    assert rows(db, "SELECT defect_id, action, reviewer FROM reviews") == [(top, "confirm", "cy")]
    assert f"Reviewed=1 of {queued}" in texts(at) and f"Waiting={queued - 1}" in texts(at)
    assert f"#{top} " not in "\n".join(m.value for m in at.markdown if m.value.startswith("###"))
    at.button(key="queue_skip").click().run()
    assert rows(db, "SELECT count(*) FROM reviews") == [(1,)]  # skipping writes nothing


def test_analytics_shows_pareto_rates_and_field_precision(db: Path) -> None:
    sampled = rows(db, "SELECT defect_id, class FROM review_queue WHERE reason = 'sample' ORDER BY defect_id")
    at = app("analytics")
    assert "No sampled defect has been reviewed yet." in texts(at)
    assert len(at.get("vega_lite_chart")) >= 3  # Pareto, rate over time, process scatter
    rates = next(d.value for d in at.dataframe if "defects_per_1000m" in d.value.columns)
    defects = rows(db, "SELECT count(*) FROM defects")[0][0]
    assert rates["defects"].sum() == defects and rates["length_m"].sum() == pytest.approx(400.0)
    defect_id, cls = sampled[0]
    from inspection.records.store import Store

    with Store(db) as store:  # a reviewer confirmed one sampled defect elsewhere
        store.add_review(defect_id, "Di Sampler", "confirm")
    at.run()
    precision = next(d.value for d in at.dataframe if "precision" in d.value.columns)
    assert precision.set_index("class").loc[cls, ["confirmed", "reviewed"]].tolist() == [1, 1]


def test_models_page_shows_versions_and_the_active_one(db: Path) -> None:
    at = app("models", user="mel")
    shown = texts(at)
    assert "Active hot model=hot-20261122-1" in shown and "better recall" in shown
    versions = at.dataframe[0].value
    assert set(versions["version"]) == {"hot-20261120-1", "hot-20261122-1"}
    assert versions.set_index("version").loc["hot-20261122-1", "active"] == "yes"
    history = at.dataframe[1]
    assert "previous" in history.value.columns
    labels = {c.get("label") for c in json.loads(history.proto.columns).values()}
    assert {"line type", "previous version"} <= labels  # words in the headers, not the registry's keys



def test_models_page_shows_what_the_shadow_model_disagreed_on(db: Path, models_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    crops = tmp_path / "own-crops"  # the shadow crops of this test only (the sample's crops are shared)
    monkeypatch.setenv("STEEL_INSPECT_CROPS", str(crops))
    with Store(db, crops=CropStore(crops)) as store:
        sent = add_shadow_run(store, "C1001", "hot-20261120-1")
    registry = Registry(models_dir)
    registry.set_shadow("hot-20261120-1", by="mel", reason="older candidate, for the test")
    try:
        at = app("models", user="mel")
    finally:
        registry.set_shadow(None, line_type="hot", by="mel")
    shown = texts(at)
    items = [d for m in sent for d in m.disagreements]
    expected = {kind: sum(d.kind == kind for d in items) for kind in ("active_only", "shadow_only", "other_class")}
    assert all(expected.values())
    assert "Shadow mode: what a promotion would change" in shown
    assert "Shadow hot model=hot-20261120-1" in shown and "older candidate, for the test" in shown
    assert f"Frames compared={len(sent)}" in shown
    assert all(f"{kind.replace('_', ' ')}={n}" in shown for kind, n in expected.items())
    runs = next(d.value for d in at.dataframe if "frames compared" in d.value.columns)
    assert runs.iloc[0][["active", "shadow", "frames compared"]].tolist() == ["hot-20261123-1", "hot-20261120-1",
                                                                              len(sent)]
    per_class = next(d.value for d in at.dataframe if "shadow class" in d.value.columns)
    assert per_class.groupby("kind")["n"].sum().to_dict() == expected  # counts per kind and class
    other = [d for d in items if d.kind == "other_class"][0]
    pairs = per_class[per_class["kind"] == "other_class"][["active class", "shadow class"]].values.tolist()
    assert [other.active_class, other.shadow_class] in pairs
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert len(captions) == sum(min(n, 8) for n in expected.values())  # a sample of each kind, with crops
    assert any(c.startswith("active: ") and "/ shadow: " in c for c in captions)
    assert any(c.startswith("shadow: scratches 0.55") for c in captions)


def test_coil_report_downloads_render_through_the_records_report_module(db: Path) -> None:
    from inspection.console.forms import coil_report

    pdf = coil_report(str(db), (0,), "C1001", "pdf")
    csv_text = coil_report(str(db), (0,), "C1001", "csv").decode()
    assert pdf.startswith(b"%PDF-")
    assert len(csv_text.strip().splitlines()) == 1 + 40  # header + one line per defect


def test_a_missing_database_is_named_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEEL_INSPECT_DB", str(tmp_path / "nowhere.db"))
    at = app("coils")
    assert any("No line database at" in w.value and "nowhere.db" in w.value for w in at.warning)
    assert not (tmp_path / "nowhere.db").exists()  # the console never creates a database


def test_reads_are_cached_until_the_database_changes(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspection.records import queries

    calls: list[str] = []
    real = queries.coil_defects

    def counting(conn: object, coil: str, **kwargs: object) -> list:
        if sys._getframe(1).f_globals["__name__"] == "inspection.console.data":  # the console's reads only
            calls.append(coil)
        return real(conn, coil, **kwargs)

    monkeypatch.setattr(queries, "coil_defects", counting)
    at = app("coil_detail", user="ana", selected_coil="C1003", gallery_open=True)
    assert calls == ["C1003"]
    at.number_input(key="gallery_page").set_value(2).run()
    at.toggle(key="hide_rejected").set_value(True).run()
    assert calls == ["C1003"]  # widget interactions re-use the cached read
    defect_id = rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1003'")[0][0]
    _select_defect(at, defect_id)
    at.button(key="detail_review_reject").click().run()
    assert calls == ["C1003", "C1003"]  # the review changed the audit head: read again, nothing stale
    assert "Counted=299" in texts(at)


# -- sign-in, roles, sessions, the second person ------------------------------------------------

def test_without_users_the_console_says_how_to_make_one_and_refuses_actions(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM users")
    at = app("coil_detail", selected_coil="C1002")
    assert any("No users: create one with `steel-inspect users add" in w.value for w in at.sidebar.warning)
    assert not at.sidebar.text_input  # nothing to sign in with
    _select_defect(at, rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0])
    at.button(key="detail_review_confirm").click().run()
    assert any("Action refused. No users: create one" in e.value for e in at.error)
    assert rows(db, "SELECT count(*) FROM reviews") == [(0,)]


def test_a_wrong_password_is_refused_and_five_lock_the_account(db: Path) -> None:
    at = app()
    for _ in range(4):
        sign_in(at, "ana", "not-my-password")
        assert [e.value for e in at.sidebar.error] == ["Sign-in refused: wrong name or password."]
    sign_in(at, "ana", "not-my-password")
    assert "is locked after 5 failed attempts until" in at.sidebar.error[0].value
    sign_in(at, "ana")  # the right password, too late
    assert "Account ana is locked" in at.sidebar.error[0].value and signed_in_as(at) is None
    assert rows(db, "SELECT outcome FROM login_events ORDER BY id") == [
        ("bad_password",)] * 4 + [("locked_out",), ("locked",)]
    assert rows(db, "SELECT actor FROM audit_log WHERE kind = 'user_locked'") == [("console",)]
    assert not any("password-1" in value for value in (*[str(v) for v in rows(db, "SELECT * FROM login_events")],
                                                       *[e.value for e in at.sidebar.error]))


def test_an_inspector_may_review_but_not_override_or_see_the_models_page(db: Path) -> None:
    at = app("coil_detail", user="ana", selected_coil="C1001")
    at.selectbox(key="override_grade").select("prime")
    at.text_area(key="override_reason").input("looks fine to me")
    at.button(key="FormSubmitter:override_form-Override grade").click().run()
    refused = ("Action refused: A grade override needs the role quality engineer or admin; "
               "ana is signed in as inspector.")
    assert refused in [e.value for e in at.error], [e.value for e in at.error]
    assert rows(db, "SELECT count(*) FROM grade_overrides") == [(0,)]
    at.switch_page(f"{PAGES}/models.py").run()
    assert any("The Models page is not shown" in w.value and "ML engineer or admin" in w.value for w in at.warning)
    assert not at.dataframe


def test_hold_to_prime_needs_a_second_person_in_the_console(db: Path) -> None:
    at = app("coil_detail", user="bo", selected_coil="C1002")
    for grade, reason in (("hold", "stains: check in daylight"), ("prime", "stains wipe off")):
        at.selectbox(key="override_grade").select(grade)
        at.text_area(key="override_reason").input(reason)
        at.button(key="FormSubmitter:override_form-Override grade").click().run()
    assert any("recorded as pending" in s.value for s in at.success)
    assert "Grade=hold" in texts(at)  # the pending prime is not in effect
    pending = rows(db, "SELECT max(id) FROM grade_overrides")[0][0]
    assert any(f"Pending override #{pending} to **prime** by bo" in w.value for w in at.warning)
    at.button(key=f"approve_override_{pending}").click().run()  # by the same person
    assert any("needs a second person: bo made it" in e.value for e in at.error)
    assert "Grade=hold" in texts(at)
    at.sidebar.button(key="sign_out").click().run()
    assert signed_in_as(at) is None and any(i.value == "Signed out." for i in at.sidebar.info)
    sign_in(at, "cy")
    at.switch_page(f"{PAGES}/coil_detail.py").run()
    at.button(key=f"approve_override_{pending}").click().run()
    assert not at.exception, at.exception
    assert "Grade=prime" in texts(at)
    assert rows(db, "SELECT action, by FROM override_approvals ORDER BY id") == [("requested", "bo"),
                                                                                ("approved", "cy")]
    with open_db(db, readonly=True) as conn:
        assert audit.verify(conn).ok


@pytest.mark.parametrize(("idle_min", "expired"), [(479.9, False), (480.0, False), (480.1, True)])
def test_a_session_expires_after_the_configured_idle_time(idle_min: float, expired: bool) -> None:
    start = 1_800_000_000 * 10**9
    session = Session("ana", "inspector", start, start)
    assert idle_expired(session, start + int(idle_min * 60 * 10**9), 480.0) is expired


@pytest.mark.parametrize(("address", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                   ("0.0.0.0", False), ("10.1.2.3", False), ("plant-pc", False)])
def test_only_loopback_addresses_count_as_not_exposed(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_an_idle_session_ends_and_its_action_is_refused(db: Path) -> None:
    at = app("coil_detail", user="ana", selected_coil="C1002")
    session = at.session_state[SESSION_KEY]
    at.session_state[SESSION_KEY] = replace(session, last_seen_ns=time.time_ns() - 481 * 60 * 10**9)
    _select_defect(at, rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0])
    at.button(key="detail_review_reject").click().run()
    assert any("Action refused: Your session ended after 480 min without an action" in e.value for e in at.error)
    assert rows(db, "SELECT count(*) FROM reviews") == [(0,)]
    assert signed_in_as(at) is None and at.sidebar.text_input(key="sign_in_name")  # the form is back


def test_a_user_disabled_after_signing_in_is_refused_at_the_next_action(db: Path) -> None:
    at = app("coil_detail", user="ana", selected_coil="C1002")
    with open_db(db) as conn:
        users.set_disabled(conn, "ana", True, actor="cli:admin")
    _select_defect(at, rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0])
    at.button(key="detail_review_confirm").click().run()
    assert [e.value for e in at.error] == ["Action refused: The account ana is disabled: signed out (ask an admin)."]
    assert signed_in_as(at) is None
    assert rows(db, "SELECT count(*) FROM reviews") == [(0,)]


def _browser_claims_the_cookie(at: AppTest) -> str:
    """What the page's JavaScript does after a sign-in: swap the claim code for the token."""
    code = at.session_state[browser_session.CLAIM_KEY]
    scripts = [e.proto.body for e in at.get("html")]
    assert any(session_cookie.CLAIM_PATH in body and code in body for body in scripts), scripts
    token = session_cookie.take(code)
    assert token is not None and not any(token in body for body in scripts)  # never in the page
    return token


def test_a_reload_or_a_new_tab_resumes_the_session_until_sign_out(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = app("coil_detail", user="ana", selected_coil="C1002")
    token = _browser_claims_the_cookie(first)
    assert rows(db, "SELECT name FROM console_sessions") == [("ana",)]
    monkeypatch.setattr(browser_session, "cookie_token", lambda: token)  # the browser sends the cookie
    reloaded = app("coil_detail", selected_coil="C1002")  # a new Streamlit session: a reload, a new tab
    assert signed_in_as(reloaded) == "ana" and not reloaded.sidebar.text_input
    _select_defect(reloaded, rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0])
    reloaded.button(key="detail_review_confirm").click().run()
    assert rows(db, "SELECT reviewer FROM reviews") == [("ana",)]
    reloaded.sidebar.button(key="sign_out").click().run()
    assert signed_in_as(reloaded) is None and rows(db, "SELECT count(*) FROM console_sessions") == [(0,)]
    assert any(session_cookie.END_PATH in e.proto.body for e in reloaded.get("html"))  # the cookie is dropped
    first.run()  # the other tab holds the same token: signed out at its next run
    assert signed_in_as(first) is None and any(i.value == ENDED for i in first.sidebar.info)
    again = app("coil_detail", selected_coil="C1002")  # a reload after sign-out, the old cookie still sent
    assert signed_in_as(again) is None and again.sidebar.text_input(key="sign_in_name")


def test_a_new_password_or_a_disabled_account_ends_open_sessions(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app("coil_detail", user="ana", selected_coil="C1002")
    token = _browser_claims_the_cookie(at)
    with open_db(db) as conn:
        users.set_password(conn, "ana", "ana-password-2", actor="cli:admin", params=FAST)
    _select_defect(at, rows(db, "SELECT min(id) FROM defects WHERE coil = 'C1002'")[0][0])
    at.button(key="detail_review_confirm").click().run()
    assert [e.value for e in at.error] == [f"Action refused: {ENDED}"] and signed_in_as(at) is None
    monkeypatch.setattr(browser_session, "cookie_token", lambda: token)
    assert signed_in_as(app()) is None  # the old token resumes nothing
    at = app(user="ana", password="ana-password-2")
    monkeypatch.setattr(browser_session, "cookie_token", lambda: _browser_claims_the_cookie(at))
    with open_db(db) as conn:
        users.set_disabled(conn, "ana", True, actor="cli:admin")
    assert signed_in_as(app()) is None and rows(db, "SELECT count(*) FROM console_sessions") == [(0,)]
    assert rows(db, "SELECT count(*) FROM reviews") == [(0,)]


def test_a_resumed_session_idle_too_long_is_refused(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _browser_claims_the_cookie(app(user="bo"))
    with sqlite3.connect(db) as conn:  # the tab was closed 481 minutes ago
        conn.execute("UPDATE console_sessions SET last_seen_ns = ?", (time.time_ns() - 481 * 60 * 10**9,))
    monkeypatch.setattr(browser_session, "cookie_token", lambda: token)
    at = app()
    assert signed_in_as(at) is None
    assert any("Your session ended after 480 min without an action" in i.value for i in at.sidebar.info)


def test_selected_defect_shows_its_crop_with_box_and_relabel_starts_at_its_class(db: Path) -> None:
    at = app("coil_detail", user="bo", selected_coil="C1001")
    defect_id, cls = rows(db, "SELECT id, class FROM defects WHERE coil = 'C1001' ORDER BY id LIMIT 1")[0]
    images_before = len(at.get("image"))
    _select_defect(at, defect_id)
    assert len(at.get("image")) == images_before + 1  # the selected crop beside the map
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert captions[0] == "box in the class colour; bar in millimetres"  # drawn with box and scale bar
    assert at.selectbox(key="detail_review_class").value == cls
    at.button(key="detail_review_relabel").click().run()  # sent without choosing: not a relabel
    assert any("already " + cls in e.value for e in at.error)
    assert rows(db, "SELECT count(*) FROM reviews") == [(0,)]


def test_an_override_keeps_the_automatic_grade_and_its_reasons_in_view(db: Path) -> None:
    at = app("coil_detail", user="bo", selected_coil="C1001")
    automatic = rows(db, "SELECT grade, reasons FROM grades WHERE coil = 'C1001' AND source = 'auto' "
                         "ORDER BY id DESC LIMIT 1")[0]
    target = "secondary" if automatic[0] != "secondary" else "downgrade"
    at.selectbox(key="override_grade").select(target)
    at.text_area(key="override_reason").input("customer accepts edge marks (claim 42)")
    at.button(key="FormSubmitter:override_form-Override grade").click().run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Automatic grade, for reference:" in shown and f"**{automatic[0]}** (auto" in shown
    for reason in json.loads(automatic[1]):
        assert reason in shown
    history = next(d.value for d in at.dataframe if "trigger" in d.value.columns)
    assert "None" not in set(history["by"].astype(str)) and "bo" in set(history["by"])
