"""The clean-strip check (`inspection.clean_strip`): the test of two counts, and `models promote` running
the real line (cameras, worker, recorder processes) on defect-free strip with real models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspection.clean_strip import excess_p_value, findings
from inspection.cli import main
from inspection.registry import Registry
from tests.conftest import REPO
from tests.line_configs import clean_strip_gate_config

ACTIVE = "hot-20261204-4"  # a shipped model (int8, with its OpenVINO copy)
LOOSE = "hot-20261204-99"  # the same file with thresholds that let plain texture through


def _figures(records: int, unknown: int = 0, metres: float = 1220.0) -> dict[str, Any]:
    return {"strip_m": metres, "records": records, "unknown": unknown}


@pytest.mark.parametrize(("a", "b", "refused"), [
    (30, 21, False),  # fewer than the active model
    (30, 30, False),  # as many
    (21, 30, False),  # more, but well within chance at 1.25x
    (30, 60, True),  # twice as many on 1,220 m: chance gives that 2 % of the time
    (0, 3, False),  # three where the active model had none: chance 17 %
    (0, 6, True),  # six: chance 3 %
])
def test_a_count_is_refused_only_beyond_the_ratio_and_chance(a: int, b: int, refused: bool) -> None:
    found = findings(_figures(a), _figures(b), max_ratio=1.25)
    assert bool(found) is refused
    if refused:
        assert found[0].startswith(f"clean strip: {b} defects on 1220 m against the active model's {a}")


def test_unknown_records_are_judged_on_their_own() -> None:
    found = findings(_figures(30, unknown=1), _figures(30, unknown=12), max_ratio=1.25)
    assert len(found) == 1 and "12 `unknown` defects" in found[0]


def test_the_p_value_weighs_each_strip_by_its_length() -> None:
    same_rate = excess_p_value(10, 20, 100.0, 200.0, 1.0)  # the same rate per metre on twice the strip
    assert 0.3 < same_rate < 0.7
    assert excess_p_value(10, 20, 200.0, 200.0, 1.0) < 0.05  # twice the rate
    assert excess_p_value(5, 0, 100.0, 100.0, 1.25) == 1.0
    # a model that floods the strip (thousands of records) gives an answer, not an overflow
    assert excess_p_value(12000, 12000, 1220.0, 1220.0, 1.25) > 0.99
    assert excess_p_value(100, 3000, 1220.0, 1220.0, 1.25) < 1e-9


def test_no_strip_inspected_is_a_finding_not_a_pass() -> None:
    found = findings(_figures(0, metres=0.0), _figures(0), max_ratio=1.25)
    assert found and "no strip inspected" in found[0]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A scratch registry: the shipped model active, and a copy of it whose manifest thresholds (0.03 for
    every class) let plain texture through; the test figures are the same, so only the clean-strip
    check can tell the two apart."""
    root = tmp_path / "models"
    source = REPO / "models" / "hot" / ACTIVE
    shutil.copytree(source, root / "hot" / ACTIVE)
    shutil.copytree(source, root / "hot" / LOOSE)
    data = json.loads((root / "hot" / LOOSE / "manifest.json").read_text())
    data.update(version=LOOSE, operating_threshold=0.03,
                operating_thresholds={c: 0.03 for c in data["operating_thresholds"]})
    (root / "hot" / LOOSE / "manifest.json").write_text(json.dumps(data, indent=1))
    registry = Registry(root)
    registry.promote(ACTIVE, by="test", reason="setup")
    return registry


@pytest.fixture
def small_line(tmp_path: Path, ipc_dir: Path) -> Path:
    """The demo line with small frames, the model on every tile and the check on 8 frames per camera. The
    line's own thresholds apply to both models; the demo's inclusion entry is left out, so that the
    models' own inclusion thresholds (0.25 and the loose 0.03) tell them apart."""
    return clean_strip_gate_config(tmp_path, ipc_dir, frames=8, extra={
        'first_stage = "windows"': 'first_stage = "none"', 'providers = "auto"': 'providers = "cpu"',
        "\ninclusion = 0.25 ": "\n# inclusion = 0.25 "})


@pytest.mark.slow
@pytest.mark.datasets
def test_models_promote_refuses_a_model_that_marks_clean_strip(registry: Registry, small_line: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["models", "--registry", str(registry.root), "promote"]
    assert main([*argv, LOOSE, "--config", str(small_line), "--by", "test"]) == 2
    err = capsys.readouterr().err
    assert f"{LOOSE} is worse than the active {ACTIVE} on clean strip: clean strip:" in err
    assert registry.active("hot") == ACTIVE  # nothing changed

    # Forced: the check does not run, and the history says so.
    assert main([*argv, LOOSE, "--config", str(small_line), "--force", "--reason", "test", "--by", "test"]) == 0
    assert registry.active("hot") == LOOSE
    forced = registry.history()[-1]
    assert forced["clean_strip"] == {"run": False, "why": "--force"}

    # The other way round the check runs, passes, and its figures go into the history.
    capsys.readouterr()
    assert main([*argv, ACTIVE, "--config", str(small_line), "--by", "test"]) == 0
    assert "clean strip (" in capsys.readouterr().out
    assert registry.active("hot") == ACTIVE
    entry = registry.history()[-1]["clean_strip"]
    assert entry["run"] is True and entry["findings"] == [] and entry["frames_per_camera"] == 8
    active, candidate = entry["active"], entry["candidate"]  # the loose model was the active one then
    assert active["model"] == LOOSE and candidate["model"] == ACTIVE
    assert active["strip_m"] == candidate["strip_m"] > 0  # the same strip: 2 cameras x 8 frames
    assert active["records"] > 2 * candidate["records"]
    assert sum(active["by_class"].values()) == active["records"]


@pytest.mark.slow
@pytest.mark.datasets
def test_the_activation_after_a_new_model_is_refused_by_the_clean_strip_check(registry: Registry, small_line: Path,
                                                                              tmp_path: Path) -> None:
    """train, quantize and classifier activate a model the val gate passed only if the check passes too: the
    check runs the model folder they are about to register (its manifest written there first)."""
    from inspection.clean_strip import Gate
    from training.finalize import decide_activation

    folder = tmp_path / "work"
    shutil.copytree(registry.root / "hot" / LOOSE, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    given = json.loads(json.dumps(manifest))
    (folder / "manifest.json").unlink()  # written by the decision, as the caller's dict holds it
    gate = Gate.from_config(small_line)
    activate, reason = decide_activation(registry, "hot", folder, manifest, True, "val passed", gate, True)
    assert activate is False and reason.startswith("not activated: clean strip:") and reason.endswith("(val passed)")
    promotion = manifest["promotion"]
    assert promotion["activated"] is False and promotion["reason"] == reason
    figures = promotion["clean_strip"]
    assert figures["findings"] and figures["candidate"]["model"] == str(folder)
    assert json.loads((folder / "manifest.json").read_text()) == given
    # not run when the val gate already said no, when the model is not registered, or with the check off
    assert decide_activation(registry, "hot", folder, given, False, "no", gate, True) == (False, "no")
    assert given["promotion"] == {"activated": False, "reason": "no"}
    unregistered = "not registered (--no-register); the val gate said: yes"
    assert decide_activation(registry, "hot", folder, given, True, "yes", gate, False) == (False, unregistered)
    assert given["promotion"] == {"activated": False, "reason": unregistered}
    off = Gate(small_line, 0, 1.25)
    assert decide_activation(registry, "hot", folder, given, True, "yes", off, True) == (True, "yes")
    assert given["promotion"] == {"activated": True, "reason": "yes"}
    # a check that cannot run (the plant's frames folder is gone) keeps the model from going live, not from
    # being registered: the decision says why
    gone = Gate(small_line, 8, 1.25, tmp_path / "no-such-folder")
    activate, reason = decide_activation(registry, "hot", folder, given, True, "yes", gone, True)
    assert activate is False and reason.startswith("not activated: the clean-strip check could not run:")
    assert str(tmp_path / "no-such-folder") in reason
    assert given["promotion"]["clean_strip"]["run"] is False


@pytest.mark.slow
@pytest.mark.datasets
def test_bench_clean_strip_prints_each_models_figures_and_the_gates_finding(
        registry: Registry, small_line: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(registry.root))
    out = tmp_path / "clean.json"
    assert main(["bench", "clean_strip", "--model", ACTIVE, LOOSE, "--frames", "8", "--config", str(small_line),
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    printed = capsys.readouterr()
    assert figures == json.loads(printed.out)
    assert f"{LOOSE}: {figures['models'][LOOSE]['records']} records" in printed.err
    active, loose = figures["models"][ACTIVE], figures["models"][LOOSE]
    assert active["strip_m"] == loose["strip_m"] > 0 and loose["records"] > 2 * active["records"]
    assert figures["against_first"][LOOSE] and figures["against_first"][LOOSE][0].startswith("clean strip:")
    assert figures["frames_per_camera"] == 8 and figures["seed"] == 21 and figures["line_type"] == "hot"


def _clean_frames(folder: Path, count: int, rows: int = 256, cols: int = 512) -> Path:
    """Defect-free hot-strip frames as a plant would keep them: image files in a folder (here the
    simulator's texture generator, from a seed family of this test's own)."""
    import cv2

    from cameras.textures import hot_texture

    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"frame-{i:03d}.png"), hot_texture(np.random.default_rng([777, i]), rows, cols))
    return folder


def test_each_camera_replays_its_own_subfolder_or_else_the_folder(tmp_path: Path, small_line: Path) -> None:
    from inspection.clean_strip import camera_folders
    from inspection.config import load_config
    from inspection.errors import SteelInspectError

    cameras = [c.id for c in load_config(small_line).cameras]
    shared = _clean_frames(tmp_path / "clean", 2)
    _clean_frames(shared / cameras[0], 1)
    settings = camera_folders(small_line, shared)
    assert settings["cameras.0.options"]["folder"] == str(shared / cameras[0])  # its own subfolder
    assert settings["cameras.1.options"]["folder"] == str(shared)  # none of its own: the folder itself
    assert settings["cameras.0.source"] == settings["cameras.1.source"] == "folder"
    assert settings["cameras.1.options"]["coil_length_m"] == load_config(small_line).simulator.coil_length_m
    (tmp_path / "empty").mkdir()
    with pytest.raises(SteelInspectError, match=f"{tmp_path / 'empty'}: no image files"):
        camera_folders(small_line, tmp_path / "empty")


@pytest.mark.slow
@pytest.mark.datasets
def test_the_check_runs_on_the_plants_own_clean_frames(registry: Registry, small_line: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`bench clean_strip --folder`: both models replay the same plant frames (16 per camera, fewer than
    --frames) through the line; the loose model marks them, and the figures say what strip they come from."""
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(registry.root))
    frames = _clean_frames(tmp_path / "plant-clean", 16)
    out = tmp_path / "clean.json"
    argv = ["bench", "clean_strip", "--model", ACTIVE, LOOSE, "--frames", "20", "--config", str(small_line)]
    assert main([*argv, "--folder", str(frames), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["strip"] == f"frames of {frames}" and f"--folder {frames}" in figures["command"]
    active, loose = figures["models"][ACTIVE], figures["models"][LOOSE]
    # 2 cameras x 16 frames of 256 lines at 1 mm per line: the folder's strip, not 20 simulated frames each
    assert active["strip_m"] == loose["strip_m"] == pytest.approx(2 * 16 * 0.256, abs=0.3)
    assert loose["records"] > active["records"]
    # an empty folder is said before any line starts
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main([*argv, "--folder", str(tmp_path / "empty")]) != 0
    assert f"{tmp_path / 'empty'}: no image files" in capsys.readouterr().err
