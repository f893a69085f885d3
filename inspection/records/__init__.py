"""Records, coil grading and traceability for one line database (SQLite, WAL).

- `db`: open a database and upgrade its schema (`open_db`); the schema and its tables are
  described in `schema`.
- `store.Store`: the write API (the recorder, reviews, overrides, claims, imports); every
  mutating call writes its audit row in the same transaction.
- `queries`: the read API for the console and the coil report.
- `messages`: the worker -> recorder message format.
- `recorder`: the process that owns the database for a line.
- `grading`, `periodic`, `crops`, `audit`, `platform`, `report`: one concern each.
"""
