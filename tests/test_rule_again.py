"""`steel-inspect unknown-rule`: a registered model's unknown rule chosen again, as a new measured version
with the same model files (the shipped hot model, its OpenVINO copy, the real datasets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from inspection.cli import main  # noqa: E402
from inspection.config import REPO_DIR  # noqa: E402
from inspection.detector import Detector  # noqa: E402
from inspection.registry import Registry  # noqa: E402
from tests.line_configs import assert_clean_strip_decided, clean_strip_gate_config  # noqa: E402
from tests.tiny_models import add_tiny_model  # noqa: E402
from training.rule_again import RuleAgainError, rule_again_version  # noqa: E402
from training.unknown import BUDGET  # noqa: E402


@pytest.mark.slow
def test_the_rule_is_chosen_again_for_a_target_and_the_files_stay(tmp_path: Path, datasets_dir: Path,
                                                                  ipc_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    registry_dir = tmp_path / "models"
    source = Registry(REPO_DIR / "models").resolve("hot")
    if not isinstance(source.data.get("unknown"), dict) or not source.data.get("openvino"):
        pytest.skip(f"{source.version} has no unknown rule or no OpenVINO copy to carry over")
    (registry_dir / "hot").mkdir(parents=True)
    shutil.copytree(source.model_path.parent, registry_dir / "hot" / source.version)
    Registry(registry_dir).promote(source.version, reason="test setup")
    target = 0.55

    code = main(["unknown-rule", source.version, "--unseen-target", str(target), "--models", str(registry_dir),
                 "--datasets", str(datasets_dir), "--json", str(tmp_path / "summary.json"),
                 "--config", str(clean_strip_gate_config(tmp_path, ipc_dir))])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    new = Registry(registry_dir).resolve(summary["version"])  # loads = sha256 verified
    assert new.version != source.version and new.sha256 == source.sha256  # the same ONNX file
    copy, old_copy = new.data["openvino"], source.data["openvino"]
    folder = new.model_path.parent
    assert (folder / copy["model_file"]).is_file() and (folder / copy["weights_file"]).is_file()
    assert (copy["sha256"], copy["weights_sha256"]) == (old_copy["sha256"], old_copy["weights_sha256"])
    assert copy["metrics_runtime"] == "OpenVINO CPU" and copy["metrics"]["test"]["images"] > 0
    again = new.data["rule_again"]
    assert again["source_version"] == source.version and again["source_sha256"] == source.sha256
    assert again["unseen_target"] == target and f"--unseen-target {target}" in again["command"]
    # the budget: the smallest step that calls the target share of the cold set's val types unknown
    rule = new.data["unknown"]
    per_budget = {float(b): share for b, share in rule["unseen_val"]["called_unknown_per_budget"].items()}
    reaching = [b for b, share in per_budget.items() if share >= target]
    assert rule["budget"] == (min(reaching) if reaching else BUDGET) <= BUDGET
    assert all(share < target for b, share in per_budget.items() if b < rule["budget"])
    assert rule["val_known_called_unknown"] <= rule["budget"] + 0.002  # quantiles of a finite sample
    assert rule["budget_choice"]["unseen_target"] == target and summary["rule"]["budget"] == rule["budget"]
    assert rule["prototypes"] == source.data["unknown"]["prototypes"]  # the novelty is measured as before
    # what the runtime applies is the new rule
    runtime = Detector(new, providers="cpu").unknown_rule
    assert (runtime.novelty_max, runtime.class_share_min) == pytest.approx((rule["novelty_max"],
                                                                            rule["class_share_min"]))
    metrics = new.data["metrics"]
    assert metrics["val"]["images"] > 0 and metrics["test"]["images"] > 0
    assert metrics["unseen_test"]["found"] > 0 and summary["unseen_test"]["found"] == metrics["unseen_test"]["found"]
    assert (Registry(registry_dir).active("hot") == new.version) == summary["activated"]
    assert_clean_strip_decided(new.data["promotion"], summary["activated"])


def test_a_model_without_an_unknown_rule_is_refused_by_name(tmp_path: Path, datasets_dir: Path) -> None:
    registry = Registry(tmp_path / "models")
    add_tiny_model(registry, tmp_path, version="hot-20260101-1")
    with pytest.raises(RuleAgainError, match="hot-20260101-1 has no unknown rule to choose again"):
        rule_again_version("hot-20260101-1", models_dir=tmp_path / "models", datasets_dir=datasets_dir,
                           register=False)
    with pytest.raises(RuleAgainError, match=r"unseen target 1.5: expected a share in \(0, 1\]"):
        rule_again_version("hot-20260101-1", models_dir=tmp_path / "models", datasets_dir=datasets_dir,
                           unseen_target=1.5, register=False)
