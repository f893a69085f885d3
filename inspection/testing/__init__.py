"""Data builders for tests and benchmarks; never used by the line's processes.

- `synthetic`: deterministic worker -> recorder messages for a coil (`coil_messages`, `crop_png`).
- `sample_db`: a small but real line database with crops, grades, alarms and plant data, written
  through the records API, for the console tests, `steel-inspect bench console` and a first look
  (`python -m inspection.testing.sample_db OUT_DIR`).

They live outside `inspection.records` and `inspection.console` so the runtime packages hold only
what runs on a line.
"""
