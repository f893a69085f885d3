"""`bench e2e --variant`: the line run once per variant of its settings on the same frames, and what
each variant trades against the first one.

A setting that removes false defects usually loses some real ones too (a higher class threshold, a
nesting rule); whether the trade is worth it is a ratio, and on this noisy machine only runs on the
same frames can be compared. Each variant is a name and ``KEY=VALUE`` overrides on top of ``--set``
(``--variant model 'worker.class_thresholds.cold={}' --variant line``). For every variant after the
first: real defects found and false defects recorded against the first's, and the false defects
removed per real defect lost (None when none was lost).
"""

from __future__ import annotations

from typing import Any, TextIO

from inspection.errors import SteelInspectError


def parse_variants(items: list[list[str]], settings: Any) -> dict[str, dict[str, Any]]:
    """`--variant NAME [KEY=VALUE ...]` items as {name: overrides}, in the order given; none: one unnamed
    variant without overrides. `settings` parses KEY=VALUE items (`e2e._settings`)."""
    if not items:
        return {"": {}}
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, *pairs = item
        if "=" in name or not name.strip() or "/" in name:
            raise SteelInspectError(f"--variant {' '.join(item)!r}: expected a NAME first (no '=' or '/'), "
                                    "then KEY=VALUE overrides")
        if name in out:
            raise SteelInspectError(f"--variant {name!r}: given twice")
        out[name] = settings(pairs)
    return out


def trade(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """What `other` (a `compare` result) trades against `first` on the same frames."""
    found = other["found"] - first["found"]
    false = other["false_defects"] - first["false_defects"]
    lost = -found
    return {"found": found, "false_defects": false, "records": other["recorded_defects"] - first["recorded_defects"],
            "false_removed_per_defect_lost": round(-false / lost, 2) if lost > 0 else None}


def print_variants(variants: dict[str, dict[str, Any]], stage: str, out: TextIO) -> None:
    """One line per variant: its figures on `stage` and its trade against the first."""
    names = list(variants)
    first = variants[names[0]][stage]
    print(f"\n== variants, first stage {stage} (against {names[0]!r})", file=out)
    print(f"{'variant':<16} {'found':>9} {'rate':>6} {'class':>6} {'false':>6} {'per m':>6} {'records':>7}"
          f" {'d found':>7} {'d false':>7} {'false/lost':>10}", file=out)
    for name in names:
        f = variants[name][stage]
        t = trade(first, f)
        ratio = "-" if t["false_removed_per_defect_lost"] is None else f"{t['false_removed_per_defect_lost']:.1f}"
        print(f"{name:<16} {f['found']:>4}/{f['ground_truth_defects']:<4} {_share(f['detection_rate'])}"
              f" {_share(f['class_accuracy'])} {f['false_defects']:>6} {f['false_defects_per_m']:>6.3f}"
              f" {f['recorded_defects']:>7} {t['found']:>+7} {t['false_defects']:>+7} {ratio:>10}", file=out)


def _share(value: float | None) -> str:
    """A share for the table; "-" where there is none (no defect on the strip, or none found)."""
    return f"{value:>6.3f}" if value is not None else f"{'-':>6}"
