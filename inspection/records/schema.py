"""The line database schema, as versioned migrations (sqlite-utils `Migrations`, set "steel-inspect").

Tables (times are integer nanoseconds since the epoch, UTC; lengths in mm unless named otherwise):

Inspection records -- append-only, each insert covered by a content digest in `audit_log`:
- ``coils``: one row per coil seen (id, line, line type, first seen).
- ``coil_events``: coil_start / coil_end per camera as forwarded by the workers, with the
  camera's own frame and drop counts at coil end. UNIQUE (coil, camera, kind).
- ``frames``: frame coverage, one row per frame a worker inspected or had to drop
  (status ``inspected`` | ``dropped``). UNIQUE (coil, camera, frame_index). Received /
  inspected / dropped per camera and coil are aggregates of this table plus the camera's
  dropped count from ``coil_events`` (see `queries.coverage`).
- ``defects``: one row per defect: coil, surface, camera, frame seq / index, defect index in
  the frame, along / across position (mm from coil head / drive-side edge), box in px,
  length / width (mm), area (mm2), class, score, severity (1..3), model (``models.id``), crop
  sha256, capture time. Natural key UNIQUE (coil, camera, frame_index, defect_index): a frame
  re-sent after a crash is ignored, not counted twice.
- ``models``: model version + sha256 pairs referenced by frames and defects; the sha256 is that of the
  file that ran (the version's ONNX file, or its OpenVINO copy's IR: manifest ``openvino.sha256``).
- ``grades``: the grade history of each coil (``source`` auto | override), with rule-set name,
  version and sha256, reasons (JSON list), coverage and what triggered it.
- ``reviews``: inspector decisions per defect (confirm | relabel | reject), never edited.
- ``grade_overrides``: inspector grade overrides, reason mandatory.
- ``alarms``: periodic defects (pitch, roll diameter), critical defects, incomplete coverage.
- ``claims``: customer claims opened / closed per coil (crops of claimed coils are kept).
- ``defect_links`` (``m004_seam_links``): one row per pair of defect fragments that are one
  defect cut by the seam between two consecutive frames of a camera (``upper_id`` in frame k,
  ``lower_id`` in frame k+1), with the seam position, the severity of the whole merged defect
  at link time and the link time. UNIQUE (upper_id, lower_id). Written by the recorder in the
  transaction that recorded the fragments (see `seams`); the defects themselves are never
  changed. Readers merge the connected fragments into one defect (`queries.coil_defects`).
- ``defect_guesses`` (``m005_defect_guesses``): for a defect recorded as class ``unknown`` (the
  model could not tell what it is), its best guesses as JSON ``[[class, score], ...]``, written in
  the transaction that recorded the defect.

- ``frame_seals`` (``m012_frame_seals``): for a frame whose camera signed it (`inspection.signing`),
  the pixels' SHA-256 digest and the camera's Ed25519 signature (hex), written in the transaction
  that recorded the frame. UNIQUE (coil, camera, frame_index). A re-sent frame with another digest
  or signature is a conflicting duplicate (an alarm; the first record stays).

- ``shadow_frames`` and ``shadow_disagreements`` (``m009_shadow``): shadow mode (`shadow`). One row
  per frame a candidate model also inspected beside the active one (both models as ``models.id``, what
  each found, the shadow's time) and one per defect they saw differently: kind ``active_only`` (the
  active model's defect ``active_index`` in that frame, which the shadow missed), ``shadow_only``
  or ``other_class``, both classes and scores, the overlap, box, position and crop sha256 (crops in
  ``<crops_dir>/shadow``). UNIQUE per frame and shadow model (and item): re-sent results are ignored.
  Nothing else reads them for a grade, a defect count or the PLC; the review queue does (`review_queue`).

- ``override_approvals`` (``m007_override_approvals``): the second person of a grade override that
  needs one (hold -> prime, see `grading.needs_second_person`): ``requested`` (written with the
  override, by its author), then ``approved`` or ``declined`` by someone else. UNIQUE (override_id,
  action). Until it is approved such an override has no ``grades`` row, so it is not in effect.

Console users (``m006_users``; mutable, so not evidence, but every change is an audit event without
the password hash): ``users`` (name unique without regard to case, role inspector |
quality_engineer | ml_engineer | admin, scrypt hash ``scrypt$n$r$p$salt$key``, created / disabled /
password-changed times, failed attempts since the last success, locked until) and ``login_events``
(every sign-in attempt: name as typed, bounded, and its outcome; the newest 10,000 kept); see
`users`.

Console sessions (``m011_console_sessions``; operational state, not evidence): ``console_sessions``,
one row per signed-in browser: the sha256 of its random session token (never the token), the user,
created and last-seen times; deleted on sign-out, when the user is disabled or gets a new password,
and once idle longer than the console allows; see `sessions`.

Audit: ``audit_log`` (seq, time, kind, actor, canonical JSON event, prev_hash, hash), a hash chain
over every mutating event; see `audit`. From ``m003_append_only`` on, triggers refuse UPDATE and
DELETE on every evidence table (``m004_seam_links`` adds them for ``defect_links``).
``audit_checkpoints`` (``m008_audit_checkpoints``, append-only): one row per audit event signed by
the process that wrote it: (seq, head hash, key id, HMAC-SHA256 with the audit key, which lives in
a file, never here); see `checkpoints`.

PLC output (``m010_plc_sequence``; operational state, not evidence): ``plc_publishers`` (one row per
start of a line's PLC publisher: its ``epoch``, never reused) and ``plc_sequence`` (per line and topic,
the last ``seq`` the publisher numbered, written before the messages leave); see `plc_sequence`.

Plant data (``m002_platform``, imported from MES / ERP, upserted, each import audited):
``platform_coils``, ``orders``, ``customers``, ``steel_grades``, ``heats``, ``process_data``.

Derived, recomputable (not evidence; kept for fast console queries): ``coil_class_counts``
(defects per coil / class / surface / severity with the coil's day; a defect cut by frame seams
counts once, see `seams.recount_classes`), ``review_queue``
(defects picked for expert review, see `store.Store.enqueue_reviews`), ``status`` (recorder
live figures). `audit verify` rebuilds the first two from the evidence and compares.

Upserted tables (``lines``, ``cameras`` and the plant data, `STATE_TABLES`) change in place; each
event that changes them records a digest of their whole content afterwards (``"state"``), so
`audit verify` can tell an edit made behind the system's back.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "steel-inspect"
migrations = Migrations(MIGRATION_SET)

# Tables whose rows are evidence: the audit log holds a digest of every row inserted into them.
AUDITED_TABLES: tuple[str, ...] = (
    "models",
    "coils",
    "coil_events",
    "frames",
    "defects",
    "grades",
    "reviews",
    "grade_overrides",
    "alarms",
    "claims",
    "defect_links",
    "defect_guesses",
    "override_approvals",
    "shadow_frames",
    "shadow_disagreements",
    "frame_seals",
)
# Tables changed in place by upserts -> the columns their content digest is ordered by (the primary
# key: unlike rowid, it survives VACUUM).
STATE_TABLES: dict[str, str] = {
    "lines": "id",
    "cameras": "line, id",
    "customers": "name",
    "steel_grades": "name",
    "heats": "heat",
    "orders": "order_no",
    "platform_coils": "coil_id",
    "process_data": "coil_id",
}
# What m003 protected when it was written: a migration must do the same thing on every database,
# whatever later migrations add to AUDITED_TABLES (they add their own triggers).
_M003_TABLES: tuple[str, ...] = ("models", "coils", "coil_events", "frames", "defects", "grades", "reviews",
                                  "grade_overrides", "alarms", "claims")

_CORE = """
CREATE TABLE lines (id TEXT PRIMARY KEY, type TEXT NOT NULL, strip_width_mm REAL,
  created_ns INTEGER NOT NULL);
CREATE TABLE cameras (line TEXT NOT NULL, id TEXT NOT NULL, surface TEXT NOT NULL, width_px INTEGER,
  mm_per_px_across REAL, mm_per_px_along REAL, offset_mm REAL, PRIMARY KEY (line, id));
CREATE TABLE models (id INTEGER PRIMARY KEY, version TEXT NOT NULL, sha256 TEXT NOT NULL,
  first_seen_ns INTEGER NOT NULL, UNIQUE (version, sha256));
CREATE TABLE coils (id TEXT PRIMARY KEY, line TEXT NOT NULL, line_type TEXT NOT NULL,
  first_seen_ns INTEGER NOT NULL);
CREATE TABLE coil_events (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, camera TEXT NOT NULL,
  surface TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL, time_ns INTEGER NOT NULL,
  length_mm REAL, frames INTEGER, dropped INTEGER, UNIQUE (coil, camera, kind));
CREATE TABLE frames (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, camera TEXT NOT NULL,
  frame_index INTEGER NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, position_mm REAL,
  length_mm REAL, model_id INTEGER, defects INTEGER NOT NULL, reason TEXT, captured_ns INTEGER,
  recorded_ns INTEGER NOT NULL, UNIQUE (coil, camera, frame_index));
CREATE TABLE defects (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, surface TEXT NOT NULL,
  camera TEXT NOT NULL, frame_seq INTEGER NOT NULL, frame_index INTEGER NOT NULL,
  defect_index INTEGER NOT NULL, along_mm REAL NOT NULL, across_mm REAL NOT NULL,
  x1 REAL, y1 REAL, x2 REAL, y2 REAL, length_mm REAL, width_mm REAL, area_mm2 REAL,
  class TEXT NOT NULL, score REAL NOT NULL, severity INTEGER NOT NULL, model_id INTEGER,
  crop_sha256 TEXT, captured_ns INTEGER NOT NULL,
  UNIQUE (coil, camera, frame_index, defect_index));
CREATE TABLE grades (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, grade TEXT NOT NULL,
  source TEXT NOT NULL, trigger TEXT NOT NULL, reasons TEXT NOT NULL, rule_set TEXT,
  rule_version TEXT, rule_sha256 TEXT, coverage REAL, defects_counted INTEGER, by TEXT,
  time_ns INTEGER NOT NULL);
CREATE INDEX grades_coil ON grades (coil, id);
CREATE TABLE reviews (id INTEGER PRIMARY KEY, defect_id INTEGER NOT NULL, coil TEXT NOT NULL,
  reviewer TEXT NOT NULL, action TEXT NOT NULL, new_class TEXT, reason TEXT, time_ns INTEGER NOT NULL);
CREATE INDEX reviews_defect ON reviews (defect_id, id);
CREATE INDEX reviews_coil ON reviews (coil);
CREATE INDEX reviews_time ON reviews (time_ns);
CREATE TABLE grade_overrides (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, reviewer TEXT NOT NULL,
  grade TEXT NOT NULL, reason TEXT NOT NULL, time_ns INTEGER NOT NULL);
CREATE TABLE alarms (id INTEGER PRIMARY KEY, coil TEXT, kind TEXT NOT NULL, surface TEXT, class TEXT,
  across_mm REAL, pitch_mm REAL, roll_diameter_mm REAL, count INTEGER, message TEXT NOT NULL,
  details TEXT, time_ns INTEGER NOT NULL);
CREATE INDEX alarms_time ON alarms (time_ns);
CREATE INDEX alarms_coil ON alarms (coil);
CREATE TABLE coil_class_counts (coil TEXT NOT NULL, day TEXT NOT NULL, class TEXT NOT NULL,
  surface TEXT NOT NULL, severity INTEGER NOT NULL, n INTEGER NOT NULL,
  PRIMARY KEY (coil, class, surface, severity));
CREATE INDEX coil_class_counts_day ON coil_class_counts (day);
CREATE TABLE review_queue (defect_id INTEGER PRIMARY KEY, coil TEXT NOT NULL, class TEXT NOT NULL,
  priority REAL NOT NULL, reason TEXT NOT NULL, created_ns INTEGER NOT NULL);
CREATE INDEX review_queue_priority ON review_queue (priority DESC);
CREATE TABLE status (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ns INTEGER NOT NULL);
CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, kind TEXT NOT NULL,
  actor TEXT NOT NULL, event TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"""

_PLATFORM = """
CREATE TABLE customers (name TEXT PRIMARY KEY, country TEXT);
CREATE TABLE steel_grades (name TEXT PRIMARY KEY, standard TEXT, family TEXT);
CREATE TABLE heats (heat TEXT PRIMARY KEY, steel_grade TEXT);
CREATE TABLE orders (order_no TEXT PRIMARY KEY, customer TEXT, product_spec TEXT, steel_grade TEXT);
CREATE TABLE platform_coils (coil_id TEXT PRIMARY KEY, heat TEXT, slab_id TEXT, steel_grade TEXT,
  thickness_mm REAL, width_mm REAL, length_m REAL, weight_t REAL, order_no TEXT, customer TEXT,
  product_spec TEXT, produced_at TEXT, shift TEXT, line TEXT, source TEXT, imported_ns INTEGER NOT NULL);
CREATE INDEX platform_coils_heat ON platform_coils (heat);
CREATE INDEX platform_coils_order ON platform_coils (order_no);
CREATE INDEX platform_coils_customer ON platform_coils (customer);
CREATE INDEX platform_coils_grade ON platform_coils (steel_grade);
CREATE TABLE process_data (coil_id TEXT PRIMARY KEY, finishing_temp_c REAL, coiling_temp_c REAL,
  speed_m_per_s REAL, extra TEXT);
CREATE TABLE claims (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, claim_no TEXT NOT NULL,
  action TEXT NOT NULL, by TEXT NOT NULL, reason TEXT, time_ns INTEGER NOT NULL);
CREATE INDEX claims_coil ON claims (coil, id);
"""


@migrations(name="m001_core")
def m001_core(db: Database) -> None:
    _script(db, _CORE)


@migrations(name="m002_platform")
def m002_platform(db: Database) -> None:
    _script(db, _PLATFORM)


@migrations(name="m003_append_only")
def m003_append_only(db: Database) -> None:
    # Evidence is never edited in place, not even by mistake: the only way around these triggers is
    # to drop them, which the audit log's row digests then expose.
    for table in (*_M003_TABLES, "audit_log"):
        _append_only(db, table)


_SEAM_LINKS = """
CREATE TABLE defect_links (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, camera TEXT NOT NULL,
  upper_id INTEGER NOT NULL, lower_id INTEGER NOT NULL, seam_mm REAL NOT NULL, severity INTEGER NOT NULL,
  time_ns INTEGER NOT NULL, UNIQUE (upper_id, lower_id));
CREATE INDEX defect_links_coil ON defect_links (coil)
"""


@migrations(name="m004_seam_links")
def m004_seam_links(db: Database) -> None:
    # A defect cut by the seam between two frames is recorded as two fragments; the link that
    # says they are one defect is evidence too (it changes counts and grades).
    _script(db, _SEAM_LINKS)
    _append_only(db, "defect_links")


_DEFECT_GUESSES = """
CREATE TABLE defect_guesses (defect_id INTEGER PRIMARY KEY, coil TEXT NOT NULL, guesses TEXT NOT NULL);
CREATE INDEX defect_guesses_coil ON defect_guesses (coil)
"""


@migrations(name="m005_defect_guesses")
def m005_defect_guesses(db: Database) -> None:
    # A defect the model cannot name is recorded as class "unknown"; what the model thought it might
    # be is evidence too (the inspector sees it, a relabel may confirm it), kept beside the defect
    # rather than as a new column, so the digests of defects recorded before stay valid.
    _script(db, _DEFECT_GUESSES)
    _append_only(db, "defect_guesses")


_USERS = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
  role TEXT NOT NULL CHECK (role IN ('inspector', 'quality_engineer', 'ml_engineer', 'admin')),
  password_hash TEXT NOT NULL, created_ns INTEGER NOT NULL, disabled_ns INTEGER,
  failed_attempts INTEGER NOT NULL DEFAULT 0, locked_until_ns INTEGER, password_changed_ns INTEGER NOT NULL);
CREATE TABLE login_events (id INTEGER PRIMARY KEY, name TEXT NOT NULL, outcome TEXT NOT NULL,
  time_ns INTEGER NOT NULL);
CREATE INDEX login_events_time ON login_events (time_ns)
"""


@migrations(name="m006_users")
def m006_users(db: Database) -> None:
    # Users change (failed attempts, lockouts, passwords), so their rows cannot be append-only
    # evidence; what changed, and who changed it, goes to the audit chain instead (`users`).
    # The name is unique whatever its case: "Ana" and "ana" are one person to the second-person rule.
    _script(db, _USERS)


_OVERRIDE_APPROVALS = """
CREATE TABLE override_approvals (id INTEGER PRIMARY KEY, override_id INTEGER NOT NULL, coil TEXT NOT NULL,
  action TEXT NOT NULL, by TEXT NOT NULL, reason TEXT, time_ns INTEGER NOT NULL, UNIQUE (override_id, action));
CREATE INDEX override_approvals_coil ON override_approvals (coil)
"""


@migrations(name="m007_override_approvals")
def m007_override_approvals(db: Database) -> None:
    # A table of its own (grade_overrides gets no column): a new column would change the stored
    # digest of every override recorded before it.
    _script(db, _OVERRIDE_APPROVALS)
    _append_only(db, "override_approvals")


_AUDIT_CHECKPOINTS = """
CREATE TABLE audit_checkpoints (seq INTEGER PRIMARY KEY, head TEXT NOT NULL, key_id TEXT NOT NULL,
  hmac TEXT NOT NULL)
"""


@migrations(name="m008_audit_checkpoints")
def m008_audit_checkpoints(db: Database) -> None:
    # The chain alone can be recomputed by anyone with the file; the signatures need the key.
    _script(db, _AUDIT_CHECKPOINTS)
    _append_only(db, "audit_checkpoints")


_SHADOW = """
CREATE TABLE shadow_frames (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, camera TEXT NOT NULL, surface TEXT NOT NULL,
  frame_index INTEGER NOT NULL, active_model_id INTEGER NOT NULL, shadow_model_id INTEGER NOT NULL,
  active_defects INTEGER NOT NULL, shadow_defects INTEGER NOT NULL, disagreements INTEGER NOT NULL,
  shadow_ms REAL NOT NULL, captured_ns INTEGER NOT NULL, recorded_ns INTEGER NOT NULL,
  UNIQUE (coil, camera, frame_index, shadow_model_id));
CREATE INDEX shadow_frames_models ON shadow_frames (shadow_model_id, active_model_id);
CREATE TABLE shadow_disagreements (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, camera TEXT NOT NULL,
  surface TEXT NOT NULL, frame_index INTEGER NOT NULL, item INTEGER NOT NULL, active_model_id INTEGER NOT NULL,
  shadow_model_id INTEGER NOT NULL, kind TEXT NOT NULL, active_index INTEGER, active_class TEXT, active_score REAL,
  shadow_class TEXT, shadow_score REAL, iou REAL NOT NULL, x1 REAL, y1 REAL, x2 REAL, y2 REAL,
  along_mm REAL NOT NULL, across_mm REAL NOT NULL, crop_sha256 TEXT, captured_ns INTEGER NOT NULL,
  UNIQUE (coil, camera, frame_index, shadow_model_id, item));
CREATE INDEX shadow_disagreements_models ON shadow_disagreements (shadow_model_id, active_model_id, kind);
CREATE INDEX shadow_disagreements_coil ON shadow_disagreements (coil)
"""


@migrations(name="m009_shadow")
def m009_shadow(db: Database) -> None:
    # Tables of their own: what a candidate model would have found is evidence for the decision to
    # promote it (audited, append-only), but never a defect of the coil.
    _script(db, _SHADOW)
    for table in ("shadow_frames", "shadow_disagreements"):
        _append_only(db, table)


_PLC_SEQUENCE = """
CREATE TABLE plc_publishers (epoch INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, process TEXT NOT NULL,
  pid INTEGER, started_ns INTEGER NOT NULL);
CREATE TABLE plc_sequence (line TEXT NOT NULL, topic TEXT NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL, PRIMARY KEY (line, topic))
"""


@migrations(name="m010_plc_sequence")
def m010_plc_sequence(db: Database) -> None:
    # A recorder restarted by `run` must not number its PLC messages from 1 again: a PLC could not
    # tell that from a replay. AUTOINCREMENT: an epoch is never handed out twice, even after a delete.
    _script(db, _PLC_SEQUENCE)


_CONSOLE_SESSIONS = """
CREATE TABLE console_sessions (id INTEGER PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL COLLATE NOCASE, created_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL);
CREATE INDEX console_sessions_name ON console_sessions (name)
"""


@migrations(name="m011_console_sessions")
def m011_console_sessions(db: Database) -> None:
    # A sign-in must outlive a page reload, which starts a new Streamlit session: the browser keeps a
    # token, this table its hash. Rows are deleted when a session ends, so it is not evidence (sign-in
    # attempts are `login_events`, user changes audit events).
    _script(db, _CONSOLE_SESSIONS)


_FRAME_SEALS = """
CREATE TABLE frame_seals (id INTEGER PRIMARY KEY, coil TEXT NOT NULL, camera TEXT NOT NULL,
  frame_index INTEGER NOT NULL, digest TEXT NOT NULL, sig TEXT NOT NULL, UNIQUE (coil, camera, frame_index))
"""


@migrations(name="m012_frame_seals")
def m012_frame_seals(db: Database) -> None:
    # A table of its own rather than columns on frames: an added column would change the digest of
    # every frame row recorded before it, which the audit chain holds.
    _script(db, _FRAME_SEALS)
    _append_only(db, "frame_seals")


def _append_only(db: Database, table: str) -> None:
    for op in ("UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                   f"BEGIN SELECT RAISE(ABORT, '{table} is append-only evidence'); END")


def _script(db: Database, script: str) -> None:
    # One statement at a time so everything stays inside the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


MIGRATION_NAMES: tuple[str, ...] = ("m001_core", "m002_platform", "m003_append_only", "m004_seam_links",
                                    "m005_defect_guesses", "m006_users", "m007_override_approvals",
                                    "m008_audit_checkpoints", "m009_shadow", "m010_plc_sequence",
                                    "m011_console_sessions", "m012_frame_seals")
# Every table with append-only triggers (`audit verify` checks that they are still there).
APPEND_ONLY_TABLES: tuple[str, ...] = (*AUDITED_TABLES, "audit_log", "audit_checkpoints")
SCHEMA_VERSION = len(MIGRATION_NAMES)
