"""A matching MES extract for the simulator's coils, so simulated coils carry plant data.

The simulator's coil ids follow from the line's seed (`cameras.base.coil_ids`), so the
extract can be written before or after a run: the first `coils` ids of that seed, with
the strip width and coil length the cameras see. Rows come from
`inspection.records.platform.synthetic_extract` (deterministic from the seed) and are written
as a JSON array that `steel-inspect`'s platform import reads.
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path
from typing import Any

from cameras.base import coil_ids
from inspection.config import LineConfig

log = logging.getLogger(__name__)


def simulated_coil_ids(line: LineConfig, coils: int, seed: int | None = None,
                       first_coil: int | None = None) -> list[str]:
    """The ids of the first `coils` coils the line's simulated cameras produce (numbered from
    `first_coil` when the cameras are told to continue after a database's coils)."""
    seed = line.simulator.seed if seed is None else seed
    return list(islice(coil_ids(line.type, seed, first=first_coil), coils))


def mes_extract(line: LineConfig, coils: int, seed: int | None = None,
                first_coil: int | None = None) -> list[dict[str, Any]]:
    """MES rows (one per simulated coil) matching the simulator's coils, width and length."""
    from inspection.records.platform import synthetic_extract

    seed = line.simulator.seed if seed is None else seed
    return synthetic_extract(
        simulated_coil_ids(line, coils, seed, first_coil),
        line.type,
        seed,
        line=line.id,
        width_mm=line.strip_width_mm,
        length_m=line.simulator.coil_length_m,
    )


def write_mes_extract(line: LineConfig, path: Path, coils: int, seed: int | None = None,
                      first_coil: int | None = None) -> Path:
    """Write `mes_extract` as a JSON array to `path`; returns the path."""
    rows = mes_extract(line, coils, seed, first_coil)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    log.info(
        "MES extract for %d simulated coils (%s .. %s) -> %s",
        len(rows),
        rows[0]["coil_id"],
        rows[-1]["coil_id"],
        path,
    )
    return path
