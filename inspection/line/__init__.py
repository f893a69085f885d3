"""The line's processes, one module each, every one with one `main` of the same shape: logging
(set up by the CLI or the supervisor), signals (`process.StopFlag`), the line config read once and
logged, build, loop, close in ``finally``.

| module | process | links (see `inspection.transport`) |
| --- | --- | --- |
| `camera` | one per camera: a source, frames and coil events out | frames: PUSH (binds) |
| `worker` | inference workers (`inspection.worker` does the compute) | frames: PULL; results: PUSH |
| `recorder` | the single writer of the line database, and the PLC output | results: PULL (binds); PLC: PUB (binds) |
| `pipeline` | `steel-inspect run`: starts, supervises them (`supervisor`, `restarts`; figures: `run_summary`) | |

Each process reads the CURVE keys of its own sides of its links from the line's key folder at start
(`inspection.security.curve_for`), before it opens anything; `pipeline` makes the keys on a first start.

A worker or the recorder that dies while the line runs is restarted (`restarts`: at once, then with
a doubling delay, given up on after 5 restarts in 5 minutes); what it held is counted as lost.

`inspection.commands` only parse arguments and call these.
"""
