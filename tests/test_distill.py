"""Fine-tuning from a registered ONNX file and distillation from registered teachers
(`train --init-from`, `train --teacher`): real exported models, real ONNX Runtime sessions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tests.tiny_datasets import write_tiny_neu  # noqa: E402
from training.distill import Teacher, TeacherError, distill_loss, maps_session  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.from_onnx import InitError, freeze_batch_norms, load_onnx_weights  # noqa: E402
from training.model import Detector  # noqa: E402
from training.split import make_split, write_split  # noqa: E402
from training.targets import make_targets  # noqa: E402
from training.train import Options, Recipe, make_optimizer, run, train_step  # noqa: E402

torch.set_num_threads(1)


def _trained_looking(seed: int, backbone: str = "plain", stride: int = 4, classes: int = 3) -> Detector:
    """A detector with non-trivial batch-norm statistics (so folding them changes the weights) and
    a heatmap with real peaks."""
    torch.manual_seed(seed)
    model = Detector(classes, stride=stride, backbone=backbone)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        model.heat_head[-1].weight.normal_(0, 0.5)
        model.heat_head[-1].bias.fill_(-1.5)
    return model.eval()


def _image(seed: int, h: int = 96, w: int = 128) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, 1, h, w), dtype=np.uint8))


@pytest.mark.parametrize("backbone", ["plain", "plain-deep", "lite0"])
def test_weights_read_back_from_onnx_give_the_same_detector(tmp_path: Path, backbone: str) -> None:
    original = _trained_looking(1, backbone)
    path = export_onnx(original, tmp_path / "m.onnx")
    student = _trained_looking(2, backbone)  # other weights and statistics before loading
    check = load_onnx_weights(student, path)
    assert check["convolutions"] == sum(isinstance(m, torch.nn.Conv2d) for m in original.modules())
    assert check["max_heat_diff"] < 1e-3
    x = _image(3)
    with torch.no_grad():
        want, got = original.eval().detect(x), student.eval().detect(x)
    np.testing.assert_allclose(got[1].numpy(), want[1].numpy(), atol=1e-4)  # scores
    np.testing.assert_array_equal(got[2].numpy()[want[1].numpy() > 0.05], want[2].numpy()[want[1].numpy() > 0.05])
    np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), atol=1e-2)  # boxes, px


def test_a_file_of_another_network_is_refused(tmp_path: Path) -> None:
    path = export_onnx(_trained_looking(1, "plain"), tmp_path / "m.onnx")
    with pytest.raises(InitError, match="convolutions in the file"):
        load_onnx_weights(Detector(3, stride=4, backbone="plain-deep"), path)
    with pytest.raises(InitError, match=r"has weights \(3, 32, 1, 1\)"):  # the heat head: 3 classes, not 4
        load_onnx_weights(Detector(4, stride=4, backbone="plain"), path)


def _batch(classes: int = 3, stride: int = 4, n: int = 2) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    items = []
    for _ in range(n):
        image = rng.normal(90, 8, (64, 64)).clip(0, 255).astype(np.uint8)
        image[20:36, 24:40] = 200
        targets = make_targets(np.array([[24, 20, 40, 36]], np.float32), np.array([1]), classes, (64, 64), stride)
        targets["image_in"] = image[None]
        items.append(targets)
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


def test_frozen_batch_norms_keep_their_statistics_while_the_weights_train() -> None:
    recipe = Recipe(dataset="neu-det", stride=4, backbone="plain", window=(64, 64), epochs=1)
    for frozen in (True, False):
        model = _trained_looking(1)
        ema = _trained_looking(1)
        before = model.backbone.stem[1].running_mean.clone()
        weight = model.backbone.stem[0].weight.detach().clone()
        train_step(model, ema, make_optimizer(model, recipe), _batch(), recipe, 1e-3, 0, frozen_norms=frozen)
        assert not torch.equal(model.backbone.stem[0].weight, weight)
        assert torch.equal(model.backbone.stem[1].running_mean, before) is frozen
    freeze_batch_norms(model.train())
    assert model.training and not model.backbone.stem[1].training


def _manifest(path: Path, version: str, classes: tuple[str, ...] = ("a", "b", "c")) -> SimpleNamespace:
    return SimpleNamespace(version=version, sha256="0" * 64, classes=classes, model_path=path)


def test_the_teacher_is_the_mean_of_its_members_heatmaps(tmp_path: Path) -> None:
    members = [_trained_looking(seed) for seed in (1, 2)]
    paths = [export_onnx(m, tmp_path / f"m{i}.onnx") for i, m in enumerate(members)]
    teacher = Teacher([_manifest(p, f"v{i}") for i, p in enumerate(paths)], ("a", "b", "c"))
    x = _image(4, 64, 96)
    got = teacher.heat(x.float(), (16, 24))
    with torch.no_grad():
        probs = [torch.sigmoid(m((x.float() - m.mean) / m.std)[0]) for m in members]
    np.testing.assert_allclose(got.numpy(), ((probs[0] + probs[1]) / 2).numpy(), atol=1e-5)
    assert teacher.describe()["versions"] == ["v0", "v1"]
    session_dist = maps_session(paths[0]).run(None, {"image": x.numpy()})[1]
    with torch.no_grad():
        want_dist = members[0]((x.float() - members[0].mean) / members[0].std)[1]
    np.testing.assert_allclose(session_dist, want_dist.numpy(), rtol=1e-4, atol=1e-3)


def test_a_teacher_with_flips_averages_its_mirrored_views_mirrored_back(tmp_path: Path) -> None:
    model = _trained_looking(3)
    path = export_onnx(model, tmp_path / "m.onnx")
    x = _image(5, 64, 96)
    with torch.no_grad():
        def prob(image: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(model((image.float() - model.mean) / model.std)[0])

        plain = prob(x)
        mirrored = {"h": prob(x.flip(3)).flip(3), "v": prob(x.flip(2)).flip(2), "hv": prob(x.flip(2, 3)).flip(2, 3)}
    for flips in (("h",), ("h", "v"), ("h", "v", "hv")):
        teacher = Teacher([_manifest(path, "v")], ("a", "b", "c"), flips=flips)
        want = (plain + sum(mirrored[f] for f in flips)) / (1 + len(flips))
        np.testing.assert_allclose(teacher.heat(x.float(), (16, 24)).numpy(), want.numpy(), atol=1e-5)
        assert teacher.describe()["flips"] == list(flips)
    # a random network's mirror is not its own: the views differ, so the mean is not the plain map
    assert float((mirrored["h"] - plain).abs().max()) > 1e-2
    for bad in (("x",), ("h", "h")):
        with pytest.raises(TeacherError, match="teacher flips"):
            Teacher([_manifest(path, "v")], ("a", "b", "c"), flips=bad)


def test_a_resumed_run_keeps_its_teachers_flips() -> None:
    from training.train import TrainingError, _check_resume_teacher

    state = {"epoch": 3, "distill": {"teacher": ["hot-1"], "flips": ["h", "v"]}}
    opts = Options(line_type="hot", datasets_dir=Path("."), out_dir=Path("."), resume=True)
    _check_resume_teacher(state, opts)  # nothing named: the run's own
    assert opts.teacher == ("hot-1",) and opts.teacher_flips == ("h", "v")
    with pytest.raises(TrainingError, match="resume it with those --teacher-flips"):
        _check_resume_teacher(state, Options(line_type="hot", datasets_dir=Path("."), out_dir=Path("."),
                                             teacher_flips=("h",)))
    with pytest.raises(TrainingError, match="trained without a teacher"):
        _check_resume_teacher({"epoch": 3}, Options(line_type="hot", datasets_dir=Path("."), out_dir=Path("."),
                                                    teacher_flips=("h",)))


def test_a_teacher_that_cannot_teach_is_refused(tmp_path: Path) -> None:
    path = export_onnx(_trained_looking(1), tmp_path / "m.onnx")
    with pytest.raises(TeacherError, match="teacher v has classes"):
        Teacher([_manifest(path, "v", ("a", "b", "x"))], ("a", "b", "c"))
    teacher = Teacher([_manifest(path, "v")], ("a", "b", "c"))
    with pytest.raises(TeacherError, match="same output stride"):  # a stride-8 student's grid
        teacher.heat(_image(1, 64, 64).float(), (8, 8))
    from training.ensemble import merge_onnx

    merged = tmp_path / "ensemble.onnx"
    merge_onnx([path, export_onnx(_trained_looking(2), tmp_path / "m2.onnx")], merged, fp16_weights=False)
    with pytest.raises(TeacherError, match="name its members"):
        maps_session(merged)


def test_distillation_loss_pulls_the_student_towards_the_teacher() -> None:
    teacher = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert float(distill_loss(torch.logit(teacher), teacher, torch.tensor(2.0))) == pytest.approx(0.0, abs=1e-9)
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=5.0)
    gaps = []
    for _ in range(30):
        loss = distill_loss(logits, teacher, torch.tensor(2.0))
        gaps.append(float((torch.sigmoid(logits.detach()) - teacher).abs().mean()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gaps[-1] < gaps[0] / 2, gaps


def test_a_registered_model_fine_tuned_and_distilled_end_to_end(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """train, register; then train again from its weights with it as the teacher: the run records
    both, its losses have the distillation term, and a resume keeps the teacher."""
    from training import train as train_module
    from training.finalize import finalize

    folder = write_tiny_neu(tmp_path / "data", np.random.default_rng(5), min_xy=4)
    write_split(make_split(folder, "neu-det", seed=0, val_fraction=0.25, test_fraction=0.25),
                tmp_path / "splits" / "neu-det.json")
    tiny = Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=1, batch_size=4)
    monkeypatch.setitem(train_module.RECIPES, "hot", tiny)
    base = Options(line_type="hot", datasets_dir=tmp_path / "data", out_dir=tmp_path / "first", seed=0,
                   splits_dir=tmp_path / "splits", speed_check=False, command="test",
                   models_dir=tmp_path / "models")
    first = run(base)
    version = finalize(base, first, models_dir=tmp_path / "models")["manifest"]["version"]

    with pytest.raises(train_module.TrainingError, match="trained without a teacher"):
        run(dataclasses.replace(base, resume=True, teacher=(version,), epochs=2))
    opts = dataclasses.replace(base, out_dir=tmp_path / "student", init_from=version, teacher=(version,), lr=1e-4)
    state = run(opts)
    assert state["init_from"]["version"] == version and state["init_from"]["max_heat_diff"] < 1e-3
    assert state["distill"]["versions"] == [version] and state["distill"]["weight"] == 1.0
    heat, _, _, kd = state["history"][0]["loss"]
    # it starts where the first run ended, as its own teacher: a lower heat loss, a near-zero gap
    assert heat < first["history"][0]["loss"][0] and 0 <= kd < 0.01
    with pytest.raises(train_module.TrainingError, match="resume it with that --teacher"):
        run(dataclasses.replace(opts, resume=True, teacher=("hot-20991231-1",), epochs=2))
    resumed = run(dataclasses.replace(opts, resume=True, teacher=(), init_from=None, epochs=2))
    assert resumed["epoch"] == 2 and resumed["distill"]["versions"] == [version]
    manifest = finalize(dataclasses.replace(opts, resume=True), resumed, models_dir=tmp_path / "models",
                        register=False)["manifest"]
    assert manifest["training"]["init_from"]["version"] == version
    assert manifest["training"]["distill"]["versions"] == [version]
    json.dumps(manifest)  # recorded as plain JSON


def test_init_from_another_line_an_ensemble_or_an_int8_copy(tmp_path: Path) -> None:
    from training import train as train_module

    models = Path(__file__).resolve().parents[1] / "models"
    opts = Options(line_type="cold", datasets_dir=tmp_path, out_dir=tmp_path / "run", models_dir=models,
                   init_from="hot-20261205-1")
    model = Detector(7, stride=4)
    with pytest.raises(train_module.TrainingError, match="a hot model, this run trains cold"):
        train_module.init_weights(model, opts)
    hot = dataclasses.replace(opts, line_type="hot", init_from="hot-20261205-4")  # the ensemble
    with pytest.raises(train_module.TrainingError, match="name one of its members"):
        train_module.init_weights(Detector(6, stride=4), hot)
    # the int8 copy hot-20261205-3 stands for its fp32 source, hot-20261205-2
    started = train_module.init_weights(Detector(6, stride=4), dataclasses.replace(hot, init_from="hot-20261205-3"))
    assert started["version"] == "hot-20261205-2" and started["max_heat_diff"] < 1e-3
    # the active cold model: an int8 copy with a crop classifier appended; training starts from its detector
    started = train_module.init_weights(Detector(7, stride=4), dataclasses.replace(opts, init_from="cold"))
    assert started["version"] == "cold-20261202-3" and started["max_heat_diff"] < 1e-3
