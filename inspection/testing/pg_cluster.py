"""A throw-away PostgreSQL cluster for tests and benchmarks: initdb into a temporary folder, a server on
a loopback port, removed again by `stop`.

PostgreSQL refuses to run as root, so under root (CI, containers) the cluster belongs to an
unprivileged user: ``postgres`` (Debian's package creates it) or ``steel-inspect-pg``, created when
missing. The binaries are found on PATH, in $STEEL_INSPECT_PG_BIN, or in Debian's
/usr/lib/postgresql/<version>/bin (not on PATH there).

The cluster trusts local (Unix socket) connections, for setting it up, and asks a password
(scram-sha-256) on TCP, which is how the importer under test connects.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPERUSER = "admin"
FALLBACK_OS_USER = "steel-inspect-pg"


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    candidates = [os.environ.get("STEEL_INSPECT_PG_BIN", "")]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    # Debian / Ubuntu keep them per major version, newest first
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True)
    candidates += [str(p) for p in versions] + ["/usr/local/pgsql/bin"]
    for folder in filter(None, candidates):
        if all((Path(folder) / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


@dataclass
class Cluster:
    root: Path
    bin_dir: Path
    port: int
    os_user: str | None  # who runs the server (None: this process's user)

    @property
    def socket_dir(self) -> Path:
        return self.root

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """libpq key=value string for the superuser over the Unix socket (trusted)."""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        """postgresql:// URL over TCP on loopback."""
        auth = ""
        if user:
            auth = user + (f":{password}" if password else "") + "@"
        return f"postgresql://{auth}127.0.0.1:{self.port}/{dbname}"

    def sql(self, statements: str | list[str], dbname: str = "postgres") -> None:
        """Run statements as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.admin_conninfo(dbname), autocommit=True) as conn:
            for statement in [statements] if isinstance(statements, str) else statements:
                conn.execute(statement)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the cluster."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "-t", "30", "stop",
                      check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_as(self.os_user, [str(self.bin_dir / tool), *args], check=check)


def start_cluster() -> Cluster:
    """initdb + start on a free loopback port; raises `ClusterUnavailable` with the reason."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ClusterUnavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH, in "
                                 "$STEEL_INSPECT_PG_BIN or /usr/lib/postgresql/*/bin: apt-get install postgresql")
    os_user = _server_user()
    # Short (the socket path must stay under 107 bytes), and where the server's user can reach it: $TMPDIR
    # may be a folder only root can enter.
    root = Path(tempfile.mkdtemp(prefix="si-pg-", dir="/tmp" if os_user and Path("/tmp").is_dir() else None))
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = None
    try:
        _run_as(os_user, [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "-E", "UTF8",
                          "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
        for _attempt in range(3):  # another program may take the port between our probe and the server's bind
            cluster = Cluster(root, bin_dir, _free_port(), os_user)
            options = (f"-k {root} -p {cluster.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            done = cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-o", options,
                                "-w", "-t", "60", "start", check=False)
            if done.returncode == 0:
                return cluster
        log_tail = (root / "server.log").read_text(errors="replace")[-500:] if (root / "server.log").exists() else ""
        raise ClusterUnavailable(f"PostgreSQL did not start: {done.stdout[-300:]} {log_tail}")
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or exc
        shutil.rmtree(root, ignore_errors=True)
        raise ClusterUnavailable(f"cannot set up a PostgreSQL cluster: {str(detail).strip()[-300:]}") from None
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _server_user(names: tuple[str, ...] = ("postgres", FALLBACK_OS_USER)) -> str | None:
    """None when not root; else an unprivileged user to own the cluster (the last name created when missing)."""
    if os.geteuid() != 0:
        return None
    for name in names:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", names[-1]],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ClusterUnavailable(f"running as root and cannot create the user {names[-1]!r} for PostgreSQL: "
                                 f"{getattr(exc, 'stderr', None) or exc}") from None
    return names[-1]


def _run_as(user: str | None, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    kwargs: dict[str, Any] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        # extra_groups=[]: drop root's supplementary groups too
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                  "env": {**os.environ, "HOME": entry.pw_dir or "/", "USER": user, "LOGNAME": user}}
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120, cwd="/", **kwargs)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MES_TABLE = """
CREATE TABLE mes_coil (
    coil_no      char(14) PRIMARY KEY,        -- padded ids, as many MES keep them
    heat_no      integer NOT NULL,
    grade        varchar(20),
    thk          numeric(6, 3),
    wid          double precision,
    len_m        numeric(8, 1),
    weight_txt   text,                        -- a legacy text column with decimal commas
    order_no     text,
    customer     text,
    country      char(2),
    produced     timestamp without time zone, -- the plant's local time
    shift        char(1),
    ft           real,
    mill_stand   text                         -- a column the importer does not know
)
"""

MES_QUERY = """
SELECT coil_no AS coil_id, heat_no AS heat, grade AS steel_grade, thk AS thickness_mm, wid AS width_mm,
       len_m AS length_m, weight_txt AS weight_t, order_no, customer, country, produced AS produced_at,
       shift, ft AS finishing_temp_c, mill_stand
FROM mes_coil ORDER BY coil_no
"""


def fill_mes(cluster: Cluster, dbname: str, rows: int, *, start: str = "2026-11-23 06:00") -> None:
    """`rows` coils in `mes_coil` (server-side generate_series: fast for 100,000 rows and more)."""
    cluster.sql([MES_TABLE, f"""
INSERT INTO mes_coil
SELECT 'PG-' || lpad(i::text, 8, '0'), 800000 + i / 5, (ARRAY['S235JR', 'S355MC', 'DC04', 'DX51D'])[1 + i % 4],
       round((1.5 + (i % 50) * 0.1)::numeric, 3), 1000 + (i % 4) * 250, round((400 + i % 900)::numeric, 1),
       replace(((10 + i % 20) + 0.25)::text, '.', ','), '4500' || (100000 + i / 10), 'Customer ' || (i % 7),
       (ARRAY['DE', 'ES', 'FI'])[1 + i % 7 % 3], timestamp '{start}' + i * interval '6 minutes',
       substr('ABCD', 1 + i % 4, 1), 850 + (i % 60), 'F' || (1 + i % 7)
FROM generate_series(1, {int(rows)}) AS i
"""], dbname)
