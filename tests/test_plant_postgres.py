"""Plant data from a real PostgreSQL server (issue 17): import and types, idempotence, credentials,
timeouts, time zones, decimal commas, the missing-column error, streaming in batches, read-only.

The session starts a throw-away cluster (`inspection.testing.pg_cluster`: initdb into a temporary
folder, a server on a free loopback port, password authentication on TCP) and removes it at the
end. Without PostgreSQL's server binaries or psycopg the tests skip and say why; with
STEEL_INSPECT_REQUIRE_POSTGRES=1 (CI) they fail instead, so CI cannot pass without the server.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from inspection.cli import main
from inspection.config import DEMO_CONFIG
from inspection.records import plant_sql, platform
from inspection.records.audit import verify
from inspection.records.db import open_db
from inspection.records.errors import PlatformImportError
from inspection.testing import pg_cluster

PASSWORD = "Kx9-never-Shown"  # the mes role's password: no test output may ever contain it
MES_ROWS = 400


@pytest.fixture(scope="session")
def pg() -> Iterator[pg_cluster.Cluster]:
    """A running cluster with role `mes` (password PASSWORD) owning database `mes`, filled with MES_ROWS coils."""
    required = os.environ.get("STEEL_INSPECT_REQUIRE_POSTGRES") == "1"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable(required, "psycopg not installed: pip install -e '.[postgres]'")
    try:
        cluster = pg_cluster.start_cluster()
    except pg_cluster.ClusterUnavailable as exc:
        _unavailable(required, f"no PostgreSQL server could be started: {exc}")
    try:
        cluster.sql([f"CREATE ROLE mes LOGIN PASSWORD '{PASSWORD}'", "CREATE DATABASE mes OWNER mes"])
        pg_cluster.fill_mes(cluster, "mes", MES_ROWS)
        cluster.sql(["ALTER TABLE mes_coil OWNER TO mes"], "mes")
        yield cluster
    finally:
        cluster.stop()


def _unavailable(required: bool, reason: str) -> None:
    if required:
        pytest.fail(f"{reason} (STEEL_INSPECT_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@pytest.fixture
def pgpassword(monkeypatch: pytest.MonkeyPatch) -> str:
    """The password through libpq's own PGPASSWORD (what the URL does not carry)."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return PASSWORD


def _url(pg: pg_cluster.Cluster, user: str | None = "mes") -> str:
    return pg.url("mes", user)


def _line_config(tmp_path: Path, **plant: object) -> Path:
    """The demo line config with these [plant] keys changed."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    head, sep, _ = text.partition("[plant]")
    assert sep, "the demo config has a [plant] section"
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in plant.items()]
    path = tmp_path / "line.toml"
    path.write_text(head + "[plant]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _dump(db_path: Path) -> dict[str, list[tuple]]:
    db = open_db(db_path, readonly=True)
    try:
        tables = ("platform_coils", "process_data", "customers", "steel_grades", "heats", "orders")
        # imported_ns is when, not what: a re-import may change only it
        return {t: [tuple(v for k, v in zip(r.keys(), r, strict=True) if k != "imported_ns")
                    for r in db.query(f"SELECT * FROM {t} ORDER BY 1")] for t in tables}
    finally:
        db.close()


def _import(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["import-plant", *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- the import, its types, what is recorded ---------------------------------------------------------


def test_import_from_postgres_types_source_and_audit(pg: pg_cluster.Cluster, tmp_path: Path, pgpassword: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = _line_config(tmp_path, timezone="Europe/Berlin")
    db_path = tmp_path / "line.db"
    code, out, err = _import(["--sql-url", _url(pg), "--query", pg_cluster.MES_QUERY, "--config", str(config),
                              "--db", str(db_path)], capsys)
    assert code == 0, err
    source = f"postgresql://127.0.0.1:{pg.port}/mes"
    assert out.startswith(f"{source}: {MES_ROWS} rows read, {MES_ROWS} imported, 0 skipped")
    assert "mill_stand" in out  # the unknown column is kept and named once
    db = open_db(db_path)
    try:
        row = db.execute("SELECT * FROM platform_coils WHERE coil_id = 'PG-00000001'").fetchone()
        coil = dict(zip([d[0] for d in db.execute("SELECT * FROM platform_coils").description], row, strict=True))
        # char(14) padding gone; integer heat as text; numeric as REAL; decimal-comma text as a number
        assert coil["heat"] == "800000" and coil["steel_grade"] == "S355MC"
        assert coil["thickness_mm"] == pytest.approx(1.6) and isinstance(coil["thickness_mm"], float)
        assert coil["width_mm"] == 1250.0 and coil["length_m"] == 401.0 and coil["weight_t"] == 11.25
        # 2026-11-23 06:06 in Berlin (CET, UTC+1) is 05:06 UTC
        assert coil["produced_at"] == "2026-11-23T05:06:00+00:00"
        assert coil["source"] == source
        assert db.execute("SELECT country FROM customers WHERE name = 'Customer 1'").fetchone()[0] == "ES"
        extra, ft = db.execute("SELECT extra, finishing_temp_c FROM process_data WHERE coil_id = 'PG-00000001'"
                               ).fetchone()
        assert extra == '{"mill_stand": "F2"}' and ft == 851.0
        events = [e for (e,) in db.execute("SELECT event FROM audit_log WHERE kind = 'platform_import'")]
        assert len(events) == 1 and f'"source":"{source}"' in events[0]
        recorded = " ".join([out, err, *events, *(s for (s,) in db.execute("SELECT DISTINCT source FROM "
                                                                            "platform_coils"))])
        assert "mes@" not in recorded and PASSWORD not in recorded and "user" not in recorded
        assert verify(db).ok
    finally:
        db.close()


def test_reimport_is_idempotent_and_identical(pg: pg_cluster.Cluster, tmp_path: Path, pgpassword: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "line.db"
    args = ["--sql-url", _url(pg), "--query", pg_cluster.MES_QUERY, "--db", str(db_path)]
    assert _import(args, capsys)[0] == 0
    first = _dump(db_path)
    assert _import(args, capsys)[0] == 0
    assert _dump(db_path) == first and len(first["platform_coils"]) == MES_ROWS
    db = open_db(db_path, readonly=True)
    try:
        assert db.execute("SELECT count(*) FROM audit_log WHERE kind = 'platform_import'").fetchone()[0] == 2
        assert verify(db).ok
    finally:
        db.close()


def test_a_query_that_would_write_is_refused_by_the_server(pg: pg_cluster.Cluster, pgpassword: str) -> None:
    # a function that deletes, as a careless or malicious query might call (mes owns the table)
    pg.sql(["CREATE OR REPLACE FUNCTION purge_coils() RETURNS bigint LANGUAGE sql "
            "AS 'WITH gone AS (DELETE FROM mes_coil RETURNING 1) SELECT count(*) FROM gone'"], "mes")
    with pytest.raises(PlatformImportError, match="cannot execute .* in a read-only transaction"):
        list(platform.read_sql(_url(pg), "SELECT purge_coils() AS coil_id"))
    with plant_sql.open_rows(_url(pg), "SELECT count(*) AS coil_id FROM mes_coil") as rows:
        assert [r["coil_id"] for _, r in rows] == [MES_ROWS]


# --- credentials ---------------------------------------------------------------------------------------


def test_the_password_is_never_recorded_whichever_way_it_comes(pg: pg_cluster.Cluster, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    query = "SELECT coil_no AS coil_id FROM mes_coil ORDER BY coil_no LIMIT 3"
    secret_file = tmp_path / "mes.password"
    secret_file.write_text(PASSWORD + "\n")
    secret_file.chmod(0o600)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg.port}:mes:mes:{PASSWORD}\n")
    pgpass.chmod(0o600)
    db_path = tmp_path / "line.db"
    keyword = f"host=127.0.0.1 port={pg.port} dbname=mes user=mes password='{PASSWORD}'"
    ways = [  # (--sql-url, config [plant] keys, environment)
        (pg.url("mes", "mes", PASSWORD), {}, {}),  # works, with a warning
        (keyword, {}, {}),
        (_url(pg), {"password_file": str(secret_file)}, {}),
        (_url(pg), {}, {"PGPASSWORD": PASSWORD}),
        (_url(pg), {}, {"PGPASSFILE": str(pgpass)}),  # ~/.pgpass, moved for the test
    ]
    for n, (url, plant, env) in enumerate(ways):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            (tmp_path / str(n)).mkdir()
            config = _line_config(tmp_path / str(n), **plant)
            code, out, err = _import(["--sql-url", url, "--query", query, "--config", str(config),
                                      "--db", str(db_path)], capsys)
        assert code == 0, (n, err)
        assert out.startswith(f"postgresql://127.0.0.1:{pg.port}/mes: 3 rows read, 3 imported"), (n, out)
        assert PASSWORD not in out + err
    assert "the password is in --sql-url" in caplog.text and PASSWORD not in caplog.text
    db = open_db(db_path, readonly=True)
    try:
        stored = db.execute("SELECT group_concat(event, ' ') FROM audit_log").fetchone()[0]
        stored += db.execute("SELECT group_concat(source, ' ') FROM platform_coils").fetchone()[0]
    finally:
        db.close()
    assert PASSWORD not in stored and "mes@" not in stored and "user=" not in stored
    assert stored.count(f"postgresql://127.0.0.1:{pg.port}/mes") == len(ways) + 3


@pytest.mark.parametrize("case", ["wrong password in URL", "keyword string, wrong port", "keyword string, bad quoting",
                                  "URL, unknown database", "unknown scheme", "password file, wrong password"])
def test_errors_never_echo_the_password(pg: pg_cluster.Cluster, tmp_path: Path, case: str,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    wrong = "Wr0ng-" + PASSWORD
    plant: dict[str, object] = {"connect_timeout_s": 3}
    url = {
        "wrong password in URL": pg.url("mes", "mes", wrong),
        "keyword string, wrong port": f"host=127.0.0.1 port={_closed_port()} dbname=mes user=mes password={PASSWORD}",
        "keyword string, bad quoting": f"host=127.0.0.1 dbname=mes password=my {PASSWORD}",
        "URL, unknown database": pg.url("nodb", "mes", PASSWORD),
        "unknown scheme": f"mysql://mes:{PASSWORD}@127.0.0.1/mes",
        "password file, wrong password": _url(pg),
    }[case]
    if case == "password file, wrong password":
        (tmp_path / "pw").write_text(wrong)
        (tmp_path / "pw").chmod(0o600)
        plant["password_file"] = str(tmp_path / "pw")
    code, out, err = _import(["--sql-url", url, "--query", "SELECT 1 AS coil_id", "--config",
                              str(_line_config(tmp_path, **plant)), "--db", str(tmp_path / "line.db")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("steel-inspect import-plant: error: ")
    assert PASSWORD not in err and "Wr0ng" not in err and "my " not in err
    if case != "keyword string, bad quoting" and case != "unknown scheme":
        assert "postgresql://127.0.0.1:" in err  # names the server
    assert not (tmp_path / "line.db").exists()  # the source is checked before the line database is touched


def test_a_password_file_open_to_others_is_refused(pg: pg_cluster.Cluster, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    secret.chmod(0o640)
    with pytest.raises(PlatformImportError, match=r"open to other users \(mode 0640\): chmod 600") as info:
        plant_sql.open_rows(_url(pg), "SELECT 1 AS coil_id", password_file=secret)
    assert PASSWORD not in str(info.value)


def test_describe_keeps_host_port_and_database_only() -> None:
    conninfo_to_dict = pytest.importorskip("psycopg.conninfo").conninfo_to_dict

    cases = {
        "postgresql://mes:pw@db.plant.local:5433/mes?sslmode=require&application_name=x":
            "postgresql://db.plant.local:5433/mes",
        "host=/run/postgresql dbname=mes user=mes password=pw": "postgresql://%2Frun%2Fpostgresql/mes",
        "postgresql:///mes?host=10.0.0.7&user=mes&password=pw": "postgresql://10.0.0.7/mes",
        "postgresql://[::1]:5432/mes": "postgresql://[::1]:5432/mes",
    }
    for url, expected in cases.items():
        assert plant_sql.describe(conninfo_to_dict(url)) == expected


# --- timeouts and one-line errors ------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens there once the socket is closed


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    """A TCP peer that accepts the connection and then says nothing (a hung server, a proxy)."""
    pytest.importorskip("psycopg")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
        thread.start()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(PlatformImportError) as info:
            plant_sql.open_rows(f"postgresql://mes@127.0.0.1:{port}/mes", "SELECT 1 AS coil_id", connect_timeout_s=2)
        elapsed = time.monotonic() - started
        for conn in accepted:
            conn.close()
    assert str(info.value) == (f"postgresql://127.0.0.1:{port}/mes: cannot connect: no answer within 2 s "
                               "([plant] connect_timeout_s)")
    assert elapsed < 15  # psycopg applies at least 2 s; without a timeout this would never return


def test_a_server_that_hangs_mid_import_is_given_up(pg: pg_cluster.Cluster, pgpassword: str) -> None:
    """The server process stops mid-import (its TCP link stays up, so no TCP timeout helps)."""
    import psycopg
    rows = plant_sql.open_rows(_url(pg), pg_cluster.MES_QUERY, batch_rows=10, connect_timeout_s=2,
                               statement_timeout_s=0.5)
    with psycopg.connect(pg.admin_conninfo()) as admin:
        (backend,) = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                   "'steel-inspect import-plant'").fetchone()
    stream = iter(rows)
    assert next(stream)[0] == "row 1"  # the first batch arrived
    os.kill(backend, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(PlatformImportError) as info:
            list(stream)  # the rest of the first batch, then a FETCH nobody answers
        elapsed = time.monotonic() - started
    finally:
        os.kill(backend, signal.SIGCONT)
    assert str(info.value) == (f"postgresql://127.0.0.1:{pg.port}/mes: no answer within 2.5 s ([plant] "
                               "statement_timeout_s + connect_timeout_s): the server or the network hangs; "
                               "the connection was closed")
    assert elapsed < 15


def test_statement_timeout_and_query_errors_are_one_line_naming_the_server(pg: pg_cluster.Cluster,
                                                                            pgpassword: str) -> None:
    server = f"postgresql://127.0.0.1:{pg.port}/mes"
    with pytest.raises(PlatformImportError) as info:
        list(platform.read_sql(_url(pg), "SELECT 'X-1' AS coil_id FROM pg_sleep(5)", statement_timeout_s=0.3))
    assert str(info.value) == (f"{server}: query failed: canceling statement due to statement timeout "
                               "([plant] statement_timeout_s = 0.3)")
    with pytest.raises(PlatformImportError) as info:
        plant_sql.open_rows(_url(pg), "SELECT nope AS coil_id FROM mes_coil;")
    assert str(info.value) == f'{server}: query failed: column "nope" does not exist'
    with pytest.raises(PlatformImportError) as info:
        plant_sql.open_rows(f"postgresql://mes@127.0.0.1:{_closed_port()}/mes", "SELECT 1 AS coil_id")
    message = str(info.value)
    assert "\n" not in message and "cannot connect" in message and "Connection refused" in message


# --- required columns --------------------------------------------------------------------------------------


def test_a_missing_coil_id_column_is_one_error_before_any_row(pg: pg_cluster.Cluster, tmp_path: Path,
                                                               pgpassword: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Reading any row of this query fails (division by zero): the error we get proves none was read.
    query = "SELECT coil_no, 1 / (length(coil_no) - 14) AS boom FROM mes_coil"
    code, out, err = _import(["--sql-url", _url(pg), "--query", query, "--db", str(tmp_path / "line.db")], capsys)
    assert code == 2 and out == ""
    assert err == (f"steel-inspect import-plant: error: postgresql://127.0.0.1:{pg.port}/mes: the query returns no "
                   "coil_id column (its columns: coil_no, boom); name the column that holds the coil id in the "
                   "query: SELECT <column> AS coil_id, ...\n")
    assert not (tmp_path / "line.db").exists()
    csv_file = tmp_path / "mes.csv"
    csv_file.write_text("coil,width_mm\nC-1,1500\n")
    code, out, err = _import(["--csv", str(csv_file), "--db", str(tmp_path / "line.db")], capsys)
    assert code == 2 and "no coil_id column (its columns: coil, width_mm)" in err


# --- plant time -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("local", "zone", "utc"), [
    ("2026-01-15 06:00", "Europe/Berlin", "2026-01-15T05:00:00+00:00"),  # CET, UTC+1
    ("2026-07-15 06:00", "Europe/Berlin", "2026-07-15T04:00:00+00:00"),  # CEST, UTC+2
    ("2026-10-25 02:30", "Europe/Berlin", "2026-10-25T00:30:00+00:00"),  # happens twice: the first (CEST)
    ("2026-03-29 02:30", "Europe/Berlin", "2026-03-29T01:30:00+00:00"),  # skipped: read with CET
    ("2026-11-01 01:30", "America/Chicago", "2026-11-01T06:30:00+00:00"),  # twice in Chicago: the first (CDT)
    ("2026-07-15 06:00", "UTC", "2026-07-15T06:00:00+00:00"),
])
def test_naive_timestamps_are_plant_time_stored_in_utc(pg: pg_cluster.Cluster, pgpassword: str, tmp_path: Path,
                                                       local: str, zone: str, utc: str) -> None:
    naive = f"SELECT 'TZ-1' AS coil_id, timestamp '{local}' AS produced_at"  # timestamp without time zone
    aware = f"SELECT 'TZ-2' AS coil_id, timestamptz '{local}+09' AS produced_at"  # an offset of its own is kept
    rows = itertools.chain(platform.read_sql(_url(pg), naive), platform.read_sql(_url(pg), aware))
    db = open_db(tmp_path / "line.db")
    try:
        report = platform.import_rows(db, rows, "pg", timezone=ZoneInfo(zone))
        stored = dict(db.execute("SELECT coil_id, produced_at FROM platform_coils").fetchall())
    finally:
        db.close()
    assert stored["TZ-1"] == utc
    assert stored["TZ-2"] == platform._utc_iso(f"{local}+09:00", ZoneInfo(zone), None)
    dst_change = local[5:10] in ("10-25", "03-29", "11-01") and zone != "UTC"
    assert any("the clocks" in w for w in report.warnings) == dst_change


def test_plant_timezone_applies_to_csv_and_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "mes.csv"
    csv_file.write_text("coil_id,produced_at\nC-1,2026-07-15 06:00\nC-2,2026-07-15T06:00:00Z\n")
    config = _line_config(tmp_path, timezone="Europe/Lisbon")
    assert _import(["--csv", str(csv_file), "--config", str(config), "--db", str(tmp_path / "l.db")], capsys)[0] == 0
    db = open_db(tmp_path / "l.db", readonly=True)
    try:
        assert dict(db.execute("SELECT coil_id, produced_at FROM platform_coils").fetchall()) == {
            "C-1": "2026-07-15T05:00:00+00:00", "C-2": "2026-07-15T06:00:00+00:00"}
    finally:
        db.close()
    code, _, err = _import(["--csv", str(csv_file), "--config", str(_line_config(tmp_path, timezone="CEST")),
                            "--db", str(tmp_path / "l.db")], capsys)
    assert code == 2 and "plant.timezone: expected an IANA time zone" in err


# --- decimal commas -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("20,94", 20.94), ("0,800", 0.8), ("1500,5", 1500.5), (" 2,5 ", 2.5), ("1250", 1250.0), ("1.25", 1.25),
    ("1,500", "ambiguous"), ("12,345", "ambiguous"), ("1.234,5", "not a number"), ("2,5,1", "not a number"),
])
def test_decimal_commas_where_unambiguous(text: str, value: float | str) -> None:
    key = "thickness_mm" if isinstance(value, float) and value < 30 else "width_mm"
    if isinstance(value, float):
        assert platform.normalise({"coil_id": "C-1", key: text})[0][key] == pytest.approx(value)
    else:
        with pytest.raises(ValueError, match=f"{key}: {value}"):
            platform.normalise({"coil_id": "C-1", key: text})


# --- streaming --------------------------------------------------------------------------------------------------


def test_rows_stream_in_batches(pg: pg_cluster.Cluster, tmp_path: Path, pgpassword: str) -> None:
    db = open_db(tmp_path / "line.db")
    try:
        with plant_sql.open_rows(_url(pg), pg_cluster.MES_QUERY, batch_rows=64) as rows:
            report = platform.import_rows(db, rows, rows.source, batch_rows=64)
        events = [e for (e,) in db.execute("SELECT event FROM audit_log WHERE kind = 'platform_import' ORDER BY seq")]
    finally:
        db.close()
    full, rest = divmod(MES_ROWS, 64)
    assert report.imported == MES_ROWS and rows.largest_batch == 64
    assert rows.batches == full + 2  # full batches, the rest, the empty fetch that ends the cursor
    assert report.batches == full + 1  # one transaction per batch, the last one with the rest
    assert [('"last":true' in e) for e in events] == [False] * full + [True]
    assert f'"imported":{rest}' in events[-1]
