"""Tamper evidence against someone who has the database file (but not the audit key).

Each probe edits a real line database the way such a person would (plain sqlite3, the project's own
functions to recompute every digest and link, the records API to append a forged event, a crop
file overwritten) and `steel-inspect audit verify` must exit 1 with one line naming the first bad
table, row or file; bad input (a corrupt file, a missing key file) exits 2 without a traceback.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from inspection.cli import main as cli
from inspection.records import audit, checkpoints, verify_db
from inspection.records.audit_keys import AuditKey, generate_key, load_key
from inspection.records.checkpoints import AnchorLog
from inspection.records.crops import CropStore, prune
from inspection.records.db import open_db
from inspection.records.platform import import_rows, synthetic_extract
from inspection.records.store import Store
from inspection.testing.synthetic import coil_messages

REPO = Path(__file__).resolve().parents[1]
DAY_NS = 86_400 * 10**9
T0 = 1_763_900_000 * 10**9
CAMERAS = [{"id": "top-1", "surface": "top", "width_px": 1600, "mm_per_px_across": 1.0, "mm_per_px_along": 1.0,
            "offset_mm": 0.0},
           {"id": "bottom-1", "surface": "bottom", "width_px": 1600, "mm_per_px_across": 1.0,
            "mm_per_px_along": 1.0, "offset_mm": 0.0}]


def _key_path(root: Path) -> Path:
    return root / "keys" / "audit.hmac_key"


def _anchor_path(root: Path) -> Path:
    return root / "line.db.anchors.jsonl"


@pytest.fixture
def line_db(tmp_path: Path) -> Path:
    """A signed line database as the recorder, the console, an import and a prune leave it: three
    coils with crops (C-0 old enough for its crops to be pruned, except a reviewed one), plant data,
    grades, the review queue, a review, an override, and the signed head anchored in a file."""
    key = generate_key(_key_path(tmp_path))
    path = tmp_path / "line.db"
    with Store(path, crops=CropStore(tmp_path / "crops"), audit_key=key) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
        for i, start in enumerate((T0, T0 + 40 * DAY_NS, T0 + 41 * DAY_NS)):
            store.apply_batch(coil_messages(f"C-{i}", length_m=12, defects_per_frame=1.5, seed=i, crops=True,
                                            start_ns=start))
            store.grade_coil(f"C-{i}", "coil_end", force=True)
            store.enqueue_reviews(f"C-{i}")
        import_rows(store.db, [(f"item {n}", row) for n, row in
                               enumerate(synthetic_extract(["C-0", "C-1", "C-2"], "hot"))], "mes", audit_key=key)
        reviewed = store.db.execute("SELECT min(id) FROM defects WHERE coil = 'C-0'").fetchone()[0]
        store.add_review(reviewed, "anna", "confirm")
        store.override_grade("C-2", "bert", "secondary", "customer spec 4711")
        assert prune(store.db, store.crops, 30, now_ns=T0 + 45 * DAY_NS, audit_key=key).deleted > 0
        AnchorLog(_anchor_path(tmp_path)).append(checkpoints.latest(store.db), T0 + 45 * DAY_NS)
    return path


def _verify(path: Path, capsys: pytest.CaptureFixture[str], *extra: str, key: Path | None = None,
            anchor: bool = True) -> tuple[int, str]:
    args = ["audit", "verify", "--db", str(path), "--key", str(key or _key_path(path.parent))]
    args += ["--anchor", str(_anchor_path(path.parent))] if anchor else []
    code = cli([*args, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _sql(path: Path, *statements: str) -> None:
    """Someone with the file: drop the append-only triggers, edit, and put the triggers back."""
    conn = sqlite3.connect(path)
    with conn:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for sql in statements:
            assert conn.execute(sql).rowcount >= 1, sql
        for _, sql in triggers:
            conn.execute(sql)
    conn.close()


def rewrite_chain(path: Path) -> None:
    """Recompute every row digest, state digest and link of the chain with the project's own
    functions, as they would after an edit (no key needed for any of this)."""
    db = open_db(path)
    conn = db.conn
    with conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        prev = audit.GENESIS
        rows = conn.execute("SELECT seq, time_ns, kind, actor, event FROM audit_log ORDER BY seq").fetchall()
        for seq, time_ns, kind, actor, text in rows:
            event = json.loads(text)
            for table, (first, last, _, _) in event.get("rows", {}).items():
                event["rows"][table] = [first, last, *audit.digest_rows(db, table, first, last)]
            if "state" in event:
                event["state"] = {t: audit.table_state(db, t) for t in event["state"]}
            text = audit.canonical_json(event)
            digest = audit.link_hash(prev, seq, time_ns, kind, actor, text)
            conn.execute("UPDATE audit_log SET event = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                         (text, prev, digest, seq))
            prev = digest
        conn.execute(verify_db.expected_trigger("audit_log", "UPDATE"))
    db.close()


def _crop_of(path: Path, coil: str) -> Path:
    conn = sqlite3.connect(path)
    sha = conn.execute("SELECT crop_sha256 FROM defects WHERE coil = ? AND crop_sha256 IS NOT NULL ORDER BY id "
                       "LIMIT 1", (coil,)).fetchone()[0]
    conn.close()
    return CropStore(path.parent / "crops").path(sha)


def test_intact_database_verifies_with_key_anchor_and_crops(line_db: Path, capsys) -> None:  # noqa: ANN001
    code, out = _verify(line_db, capsys)
    assert code == 0, out
    assert "audit intact" in out and "head signed" in out and "unanchored tail: 0 events" in out
    assert "review_queue match their rebuild" in out
    intact, pruned = map(int, re.search(r"crops: (\d+) files intact, (\d+) deleted by recorded prunes", out).groups())
    assert intact > 0 and pruned > 0  # the crops of C-0 that the recorded prune deleted are accounted for


def test_the_installed_command_exits_0_without_a_key_and_says_what_it_did_not_check(line_db: Path) -> None:
    _key_path(line_db.parent).rename(line_db.parent / "elsewhere.key")
    run = subprocess.run([sys.executable, "-m", "inspection", "audit", "verify", "--db", str(line_db)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "signatures: NOT checked (no audit key at" in run.stdout


def _edit_grade(path: Path) -> None:
    _sql(path, "UPDATE grades SET grade = 'prime' WHERE coil = 'C-0'")
    rewrite_chain(path)


def _edit_defect_class(path: Path) -> None:
    _sql(path, "UPDATE defects SET class = 'patches' WHERE id = (SELECT max(id) FROM defects WHERE coil = 'C-1')",
         "UPDATE coil_class_counts SET n = n WHERE 1")  # (the derived counts are not the point here)
    rewrite_chain(path)


def _forge_override(path: Path) -> None:
    with Store(path) as store:  # the records API, as the console calls it, but without the key
        store.override_grade("C-0", "mallory", "prime", "looks fine to me")


def _forge_override_with_own_key(path: Path) -> None:
    with Store(path, audit_key=generate_key(path.parent / "mallory.key")) as store:
        store.override_grade("C-0", "mallory", "prime", "looks fine to me")


def _strip_signatures_and_rewrite(path: Path) -> None:
    _sql(path, "UPDATE grades SET grade = 'prime' WHERE coil = 'C-0'", "DELETE FROM audit_checkpoints")
    rewrite_chain(path)


def _edit_camera_and_rewrite(path: Path) -> None:
    _sql(path, "UPDATE cameras SET mm_per_px_across = 1.25 WHERE id = 'top-1'")
    rewrite_chain(path)


def _overwrite_crop(path: Path) -> None:
    _crop_of(path, "C-1").write_bytes(b"\x89PNG not the crop that was recorded")


def _delete_crop(path: Path) -> None:
    _crop_of(path, "C-2").unlink()


def _break_integrity(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")
    with conn:  # the index no longer matches its table: what a damaged page looks like to SQLite
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX grades_coil ON grades (grade, id)' "
                     "WHERE name = 'grades_coil'")
    conn.close()


def _drop_trigger(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TRIGGER defects_no_update")
    conn.close()


def _sql_probe(*statements: str) -> Callable[[Path], None]:
    return lambda path: _sql(path, *statements)


PROBES = {
    "grade edit, chain recomputed": (_edit_grade, "(grade, covers grades rowid"),
    "defect class edit, chain recomputed": (_edit_defect_class, "(batch, covers "),
    "forged override through the records API": (_forge_override, "(grade_override by mallory): not signed"),
    "forged override signed with another key": (_forge_override_with_own_key, "signed with another key"),
    "signatures deleted, chain recomputed": (_strip_signatures_and_rewrite, "none of the"),
    "cameras edit": (_sql_probe("UPDATE cameras SET mm_per_px_across = 1.25, offset_mm = 7 WHERE id = 'top-1'"),
                     "cameras (demo-hot-1, top-1): mm_per_px_across is 1.25, registered as 1.0"),
    "cameras edit, chain recomputed": (_edit_camera_and_rewrite, "(line_registered): its hash is not the one signed"),
    "lines edit": (_sql_probe("UPDATE lines SET strip_width_mm = 1200"),
                   "lines (demo-hot-1): strip_width_mm is 1200.0, registered as 1600.0"),
    "platform data edit": (_sql_probe("UPDATE platform_coils SET steel_grade = 'S460MC' WHERE coil_id = 'C-1'"),
                           "platform_coils: content differs from what audit seq"),
    "process data edit": (_sql_probe("UPDATE process_data SET coiling_temp_c = 555 WHERE coil_id = 'C-2'"),
                          "process_data: content differs"),
    "coil_class_counts edit": (_sql_probe("UPDATE coil_class_counts SET n = n + 1 WHERE coil = 'C-1' AND rowid = "
                                          "(SELECT min(rowid) FROM coil_class_counts WHERE coil = 'C-1')"),
                               "coil_class_counts (coil C-1, class"),
    "review_queue row deleted": (_sql_probe("DELETE FROM review_queue WHERE defect_id = "
                                            "(SELECT min(defect_id) FROM review_queue WHERE coil = 'C-2')"),
                                 "but not queued (deleted)"),
    "review_queue priority edited": (_sql_probe("UPDATE review_queue SET priority = 0.01 WHERE coil = 'C-1'"),
                                     "differs from the rebuild"),
    "overwritten crop file": (_overwrite_crop, "content does not match its sha256 (overwritten"),
    "deleted crop file": (_delete_crop, "missing, and no recorded retention prune deleted it"),
    "append-only trigger dropped": (_drop_trigger, "trigger defects_no_update missing"),
    "integrity_check fails": (_break_integrity, "PRAGMA integrity_check failed: row"),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_every_probe_is_found_and_named_in_one_line(line_db: Path, probe: str, capsys) -> None:  # noqa: ANN001
    assert _verify(line_db, capsys)[0] == 0
    tamper, expected = PROBES[probe]
    tamper(line_db)
    code, out = _verify(line_db, capsys, anchor=False)  # the database and the key alone find each one
    assert code == 1, out
    assert len(out.strip().splitlines()) == 1 and "AUDIT BROKEN" in out, out
    assert expected in out, out


def test_a_rewritten_chain_without_any_signature_is_caught_by_the_anchor_file_even_without_the_key(
        line_db: Path, capsys) -> None:  # noqa: ANN001
    _strip_signatures_and_rewrite(line_db)
    _key_path(line_db.parent).unlink()
    code = cli(["audit", "verify", "--db", str(line_db), "--anchor", str(_anchor_path(line_db.parent))])
    out = capsys.readouterr().out
    assert code == 1 and "line 1: the chain's hash at seq" in out, out


def test_deleting_the_newest_events_is_caught_by_the_anchor(line_db: Path, capsys) -> None:  # noqa: ANN001
    # the last event (the prune) and its signature go; it covered no evidence rows
    _sql(line_db, "DELETE FROM audit_checkpoints WHERE seq = (SELECT max(seq) FROM audit_log)",
         "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)")
    assert _verify(line_db, capsys, "--no-crops", anchor=False)[0] == 0  # the database alone cannot tell
    code, out = _verify(line_db, capsys, "--no-crops")
    assert code == 1 and "but the chain ends at seq" in out, out


def test_a_forged_anchor_line_and_a_wrong_key_are_reported(line_db: Path, capsys) -> None:  # noqa: ANN001
    anchor = _anchor_path(line_db.parent)
    line = json.loads(anchor.read_text())
    anchor.write_text(anchor.read_text() + json.dumps({**line, "seq": 1}) + "\n")
    code, out = _verify(line_db, capsys)
    assert code == 1 and "line 2: hmac does not match its seq and head (forged line)" in out, out
    other = generate_key(line_db.parent / "other.key")
    code, out = _verify(line_db, capsys, key=other.path, anchor=False)
    assert code == 1 and f"the given key is {other.key_id}): wrong key" in out, out


def test_unanchored_tail_is_reported_not_failed(line_db: Path, capsys) -> None:  # noqa: ANN001
    with Store(line_db, audit_key=load_key(_key_path(line_db.parent))) as store:  # a signed console review
        store.add_review(store.db.execute("SELECT max(id) FROM defects").fetchone()[0], "anna", "reject")
    code, out = _verify(line_db, capsys)
    assert code == 0 and "unanchored tail: 2 events" in out, out  # the review and its regrade


@pytest.mark.parametrize(("write", "expected"), [
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200), "not a SQLite database"),
    (lambda p: p.write_bytes(b""), "not a steel-inspect line database"),
    (lambda p: p.unlink(), "no such database"),
])
def test_a_corrupt_or_missing_file_is_one_line_and_exit_2(line_db: Path, write, expected,  # noqa: ANN001
                                                          capsys) -> None:  # noqa: ANN001
    for side in ("-wal", "-shm"):
        Path(f"{line_db}{side}").unlink(missing_ok=True)
    write(line_db)
    assert cli(["audit", "verify", "--db", str(line_db)]) == 2  # an exception would fail the test here
    captured = capsys.readouterr()
    assert not captured.out and captured.err.strip().count("\n") == 0 and expected in captured.err


def test_an_unusable_key_file_is_bad_input(line_db: Path, capsys) -> None:  # noqa: ANN001
    key = _key_path(line_db.parent)
    key.chmod(0o644)
    assert cli(["audit", "verify", "--db", str(line_db)]) == 2
    assert "readable by others" in capsys.readouterr().err
    assert cli(["audit", "verify", "--db", str(line_db), "--key", str(line_db.parent / "nope")]) == 2


def test_keys_are_files_outside_the_database_and_never_in_it(line_db: Path) -> None:
    key: AuditKey = load_key(_key_path(line_db.parent))
    assert oct(_key_path(line_db.parent).stat().st_mode & 0o777) == "0o600"
    assert key.secret.hex() not in line_db.read_bytes().decode("latin-1") and key.secret.hex() not in repr(key)
    with pytest.raises(Exception, match="refusing to replace it"):
        generate_key(_key_path(line_db.parent))


def test_frames_arriving_after_the_review_queue_was_filled_are_no_false_alarm(tmp_path: Path) -> None:
    """The queue is rebuilt from the evidence recorded before its event: late frames of a coil (a
    worker that came back after the grace time) change what a rebuild from all evidence would pick."""
    messages = coil_messages("C-LATE", length_m=40, defects_per_frame=3.0, seed=5)
    with Store(tmp_path / "line.db") as store:
        store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
        store.apply_batch(messages[: len(messages) // 2])
        store.grade_coil("C-LATE", "grace-timeout", force=True)
        queued = store.enqueue_reviews("C-LATE")
        store.apply_batch(messages[len(messages) // 2:])
        store.grade_coil("C-LATE", "late-frames")
        assert queued and store.enqueue_reviews("C-LATE")  # a second fill keeps the first rows (INSERT OR IGNORE)
        verdict = audit.verify(store.db)
        assert verdict.ok, verdict.problem


def test_user_changes_and_lockouts_are_signed_with_the_key_beside_the_database(
        line_db: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    """Console users (their changes are audit events too) are written by the users command and the
    console's sign-in: with the line's key they are signed, so the chain stays verifiable."""
    import io

    from inspection.demo_user import ensure_demo_user
    from inspection.records import users

    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    assert cli(["users", "add", "ines", "--role", "inspector", "--db", str(line_db), "--password-stdin"]) == 0
    key = load_key(_key_path(line_db.parent))
    assert ensure_demo_user(line_db, key).password is None  # users exist already: nothing written
    db = audit.sign_with(open_db(line_db), key)  # what the console's sign-in does
    users.authenticate(db, "ines", "not the password", policy=users.LoginPolicy(attempts=1))  # locked
    db.close()
    code, out = _verify(line_db, capsys)
    assert code == 0 and "unanchored tail: 2 events" in out, out  # user_added and user_locked, both signed


def test_a_committed_crop_still_staged_counts_as_present_until_the_recorder_moves_it(line_db: Path,
                                                                                      capsys) -> None:  # noqa: ANN001
    # the crop disk failed between a batch's commit and the move into place (CropStore.commit): the
    # file waits in staging, and the recorder's next start puts it in place (crops.recover)
    placed = _crop_of(line_db, "C-1")
    crops = CropStore(line_db.parent / "crops")
    sha = placed.stem
    crops.staged(sha).parent.mkdir(parents=True, exist_ok=True)
    placed.rename(crops.staged(sha))
    code, out = _verify(line_db, capsys)
    assert code == 0, out
    crops.staged(sha).unlink()
    code, out = _verify(line_db, capsys)
    assert code == 1 and "missing, and no recorded retention prune deleted it" in out
