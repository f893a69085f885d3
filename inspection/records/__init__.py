"""Records, coil grading and traceability for one line database (SQLite, WAL).

This package is the only place that runs SQL: the console, the CLI and the benchmarks call its
functions, which return plain rows (dicts, lists, tuples).

- `db.open_db`: open a database and upgrade its schema; the tables are described in `schema`.
- `store.Store`: the write API (the recorder's `apply_batch`, `grade_coil`, and -- from `actions` --
  reviews, grade overrides, alarms, claims); every mutating call writes its audit row in the same
  transaction.
- `queries` (coil level) and `analytics` (review queue, Pareto, rates, precision, line status): the
  read API for the console and the coil report.
- `messages`: the worker -> recorder message format; `recorder`: the process that owns the database.
- `seams`: defects cut by frame seams (fragments linked when recorded, merged when read).
- `audit` (the hash chain), `audit_keys` (the HMAC key file), `checkpoints` (signatures, the anchor
  file), `rebuild` and `crop_audit` (what `audit verify` rebuilds and hashes), `verify_db` (all of it).
- `grading` (rule sets in `inspection/rules/`), `review_queue`, `periodic`, `crops`,
  `platform` (MES / ERP import), `report` / `report_pdf` (the PDF needs the `console` extra).
  Test and benchmark data are built by `inspection.testing`, outside the runtime.
"""
