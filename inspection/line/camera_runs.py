"""A camera's incarnations under `run`: where a restarted camera resumes, and what they all sent.

A camera that dies while the line runs is restarted like a worker or the recorder (`restarts`). Its
restart must neither send a coil again nor more frames than asked: it starts with the coil after the
last one its predecessor started (that coil, cut short, never gets this camera's coil_end, so the
recorder holds it) and with the frames left of ``--max-frames``. What each incarnation sent comes from
its summary or, for one that was killed before writing it, from its tally (`tally`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inspection.line.tally import read_tally

_COUNTS = ("frames", "sent", "dropped", "source_dropped", "events_lost", "megapixels", "curve_refused")
_NUMBER = re.compile(r"(\d+)$")


class CameraRuns:
    """The starts of one camera of a line (`next_start`) and their figures added up (`stats`)."""

    def __init__(self, out: Path, camera_id: str, max_frames: int | None, overrides: Mapping[str, Any]) -> None:
        self.out, self.camera_id = out, camera_id
        self.name = f"camera-{camera_id}"
        self.max_frames = max_frames
        self.overrides = dict(overrides)
        self.started = 0

    def next_start(self) -> tuple[str, dict[str, Any]] | None:
        """The summary path and keyword arguments of the next start (`pipeline.camera_child`); None when
        the incarnations before sent all that was asked (nothing left to restart for)."""
        options: dict[str, Any] = {**self.overrides, "max_frames": self.max_frames}
        done = self.incarnations()
        if done:
            frames = sum(int(run.get("frames", 0)) for run in done)
            if self.max_frames is not None:
                if frames >= self.max_frames:
                    return None
                options["max_frames"] = self.max_frames - frames
            coils = sum(int(run.get("coils_started", len(run.get("coils") or []))) for run in done)
            if options.get("coils") is not None:
                if coils >= options["coils"]:
                    return None
                options["coils"] -= coils
            number = _last_coil_number(done)
            if number is not None:  # a source whose coil ids carry no number decides by itself
                options["first_coil"] = number + 1
        summary, tally = self._paths(self.started)
        self.started += 1
        return str(summary), {**options, "tally_path": str(tally)}

    def incarnations(self) -> list[dict[str, Any]]:
        """What each start reported: its summary, or its tally when it died without one (``killed``)."""
        runs = []
        for n in range(self.started):
            summary, tally = self._paths(n)
            try:
                runs.append(json.loads(summary.read_text(encoding="utf-8")))
                continue
            except (OSError, ValueError):
                pass
            counted = read_tally(tally)
            if counted is not None:
                last = counted.pop("last_coil")
                runs.append({**counted, "coils": [last] if last else [], "killed": True})
        return runs

    def stats(self) -> dict[str, Any]:
        """The incarnations' figures added up, as one camera summary for the run's books."""
        runs = self.incarnations()
        out: dict[str, Any] = {key: sum(run.get(key, 0) for run in runs) for key in _COUNTS}
        out["megapixels"] = round(out["megapixels"], 6)
        coils: list[str] = []
        for run in runs:
            coils += [c for c in run.get("coils") or [] if c not in coils]
        out.update(camera=self.camera_id, coils=coils, starts=len(runs),
                   killed=sum(1 for run in runs if run.get("killed")))
        return out

    def _paths(self, n: int) -> tuple[Path, Path]:
        return self.out / f"{self.name}.{n}.json", self.out / f"{self.name}.{n}.tally"


def _last_coil_number(runs: list[dict[str, Any]]) -> int | None:
    for run in reversed(runs):
        coils = run.get("coils") or []
        if coils:
            found = _NUMBER.search(coils[-1])
            return int(found.group(1)) if found else None
    return None
