"""Line config: the demo file loads; every bad file gives one clear error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspection.config import (
    DEMO_CONFIG,
    CameraConfig,
    ModelConfig,
    RecordsConfig,
    SimulatorConfig,
    WorkerConfig,
    load_config,
)
from inspection.errors import ConfigError


def test_demo_config_loads_and_is_frozen() -> None:
    config = load_config()
    assert config.type == "hot"
    assert [c.surface for c in config.cameras] == ["top", "bottom"]
    assert config.camera().id == config.cameras[0].id
    assert config.camera("bottom-1").surface == "bottom"
    with pytest.raises(AttributeError):
        config.id = "other"  # type: ignore[misc]
    assert config.summary()["cameras"][0]["id"] == "top-1"
    assert (config.console.address, config.console.session_idle_min, config.console.lockout_attempts,
            config.console.lockout_min) == ("127.0.0.1", 480.0, 5, 15.0)  # loopback, a shift, 5 tries, 15 min


# the demo's results line, as written there (read, so that no test names the demo's fixed ports)
RESULTS = next(line for line in DEMO_CONFIG.read_text().splitlines() if line.startswith("results = "))
MIX = "coil_mix = [[0.4, 0.0], [0.3, 0.7], [0.2, 4.0], [0.1, 30.0]]"


def _write(tmp_path: Path, old: str, new: str) -> Path:
    text = DEMO_CONFIG.read_text()
    assert old in text, old
    path = tmp_path / "line.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('type = "hot"', 'type = "warm"', "line.type: expected one of hot, cold, got 'warm'"),
        ('type = "hot"', 'type = "cold"', "model.name: 'hot' is the hot line's active model but this line is cold"),
        ("other_class_iou = 0.3", "other_class_iou = 1.5", "worker.other_class_iou: expected a share"),
        ("strip_width_mm = 1600.0", "strip_width_mm = -5", "line.strip_width_mm: expected a number > 0"),
        ("strip_width_mm = 1600.0", 'strip_width_mm = "wide"', "line.strip_width_mm: expected a number"),
        ('surface = "top"', 'surface = "side"', "cameras[0].surface: expected one of top, bottom"),
        ('id = "top-1"', 'id = "bottom-1"', "cameras: duplicate camera id 'bottom-1'"),
        ('id = "demo-hot-1"', 'id = "demo hot"', "line.id: expected an identifier"),
        ("batch_size = 1", "batch_size = 0", "worker.batch_size: expected a number > 0"),
        ("flips = []", 'flips = ["x"]', "worker.flips: test-time flips: 'x' is not one of h, v, hv"),
        ("flips = []", 'flips = ["h", "h"]', "worker.flips: test-time flips: ['h', 'h'] names a flip twice"),
        ("flips = []", 'flips = "h"', "worker.flips: expected"),
        ('providers = "auto"', 'providers = "gpu"', "worker.providers: expected one of auto, cpu, openvino, got 'gpu'"),
        ("batch_size = 1", "batch_sise = 1", "worker.batch_sise: unknown key"),
        ("live = true", "live = 1", "cameras[0].live: expected true or false, got 1"),
        ("coverage_min = 0.995", "coverage_min = 1.5", "records.coverage_min: expected a share"),
        (RESULTS, "", "endpoints.results: missing"),
        ("[line]", "[line]\n[line]", "not valid TOML"),
        (MIX, "coil_mix = [[0.5, -2.0]]", "simulator.coil_mix: expected [[share"),
        (MIX, "coil_mix = [0.5, 2.0]", "simulator.coil_mix: expected [[share"),
        ("session_idle_min = 480", "session_idle_min = 0", "console.session_idle_min: expected a number > 0"),
        ("lockout_attempts = 5", "lockout_attempts = 2.5", "console.lockout_attempts: expected an integer"),
        ("lockout_min = 15", "lockout_min = -1", "console.lockout_min: expected a number > 0"),
        ('address = "127.0.0.1"', 'address = "0.0.0.0/0"', "console.address: expected a host name or IP address"),
        ('address = "127.0.0.1"', 'adress = "0.0.0.0"', "console.adress: unknown key"),
    ],
)
def test_bad_config_names_key_and_problem(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _write(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value).strip() or "TOML" in str(info.value)


@pytest.mark.parametrize("providers", ["auto", "cpu", "openvino"])
def test_every_providers_setting_loads(tmp_path: Path, providers: str) -> None:
    # a worker configured for OpenVINO must load (the worker then needs the extra: inspection.backends)
    path = _write(tmp_path, 'providers = "auto"', f'providers = "{providers}"')
    assert load_config(path).worker.providers == providers


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_unknown_camera(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no camera 'side-9' \\(cameras: top-1, bottom-1\\)"):
        load_config().camera("side-9")


REQUIRED_ONLY = """
[line]
id = "l1"
type = "cold"
strip_width_mm = 1000.0
speed_m_per_s = 5.0
database = "line.db"
crops_dir = "crops"

[model]

[[cameras]]
id = "top-1"
surface = "top"
width_px = 100
frame_height_px = 50
mm_per_px_across = 1.0
mm_per_px_along = 1.0
endpoint = "tcp://192.0.2.1:7555"

[endpoints]
results = "tcp://192.0.2.1:7556"
plc = "tcp://192.0.2.1:7557"
"""


def test_left_out_keys_take_the_dataclass_defaults(tmp_path: Path) -> None:
    """Defaults are written once, on the dataclass fields; the loader must not keep its own."""
    path = tmp_path / "line.toml"
    path.write_text(REQUIRED_ONLY)
    config = load_config(path)
    assert config.worker == WorkerConfig()
    assert config.simulator == SimulatorConfig()
    assert config.records == RecordsConfig()
    assert config.model == ModelConfig(name="cold")  # the line's type; the registry from the environment
    assert config.cameras == (CameraConfig(id="top-1", surface="top", width_px=100, frame_height_px=50,
                                           mm_per_px_across=1.0, mm_per_px_along=1.0,
                                           endpoint="tcp://192.0.2.1:7555"),)


def test_class_thresholds_per_line_type_load_from_the_file_and_from_overrides() -> None:
    """`bench e2e --set worker.class_thresholds.hot.inclusion=0.4` reaches the same table as the file."""
    config = load_config(overrides={"worker.class_thresholds.hot.inclusion": 0.4,
                                    "worker.class_thresholds.cold.pits": 0.3})
    assert config.worker.class_thresholds["hot"]["inclusion"] == 0.4
    assert config.worker.class_thresholds["cold"]["pits"] == 0.3
    assert load_config().worker.class_thresholds == {"hot": {"patches": 0.3, "rolled-in_scale": 0.2, "scratches": 0.2,
                                                             "pitted_surface": 0.25, "crazing": 0.15,
                                                             "inclusion": 0.25},
                                                     "cold": {"oil spots": 0.2, "pits": 0.25, "inclusions": 0.2}}
    assert load_config(overrides={"worker.class_thresholds.cold": {}}).worker.class_thresholds["cold"] == {}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("worker.class_thresholds.warm.inclusion", 0.4,
     "worker.class_thresholds: expected keys named by line type \\(hot, cold\\), got .warm."),
    ("worker.class_thresholds.hot.inclusion", 1.5, "worker.class_thresholds.hot.inclusion: expected a score"),
    ("worker.class_thresholds.hot.inclusion", "high", "worker.class_thresholds.hot.inclusion: expected a score"),
    ("worker.class_thresholds.hot", 0.4, "worker.class_thresholds.hot: expected a table"),
])
def test_bad_class_thresholds_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={key: value})


def test_same_class_containment_is_set_per_line_type() -> None:
    assert load_config().worker.same_class_containment == {}  # the demo's (demo.toml): off on both
    assert load_config(overrides={"worker.same_class_containment.hot": 0.8}).worker.same_class_containment == {
        "hot": 0.8}
    with pytest.raises(ConfigError, match="worker.same_class_containment: expected keys named by line type"):
        load_config(overrides={"worker.same_class_containment.warm": 0.5})
    with pytest.raises(ConfigError, match="worker.same_class_containment.hot: expected a share"):
        load_config(overrides={"worker.same_class_containment.hot": 1.5})
    per_class = load_config(overrides={"worker.same_class_containment.hot.crazing": 0.5})
    assert per_class.worker.same_class_containment == {"hot": {"crazing": 0.5}}
    with pytest.raises(ConfigError, match="worker.same_class_containment.hot.crazing: expected a share"):
        load_config(overrides={"worker.same_class_containment.hot.crazing": "half"})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.promote_max_clean_strip_ratio", 0.9, "model.promote_max_clean_strip_ratio: expected a ratio >= 1"),
    ("model.promote_max_clean_strip_ratio", 0.0, "model.promote_max_clean_strip_ratio: expected a number > 0"),
    ("model.promote_clean_strip_frames", -1, "model.promote_clean_strip_frames: expected a number >= 0"),
    ("model.promote_clean_strip_frames", 2.5, "model.promote_clean_strip_frames: expected an integer"),
])
def test_bad_clean_strip_settings_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={key: value})
    assert load_config().model.promote_clean_strip_frames == 600  # the demo's
