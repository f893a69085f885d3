"""The commands that build models stop at once, by name, when the `train` extra is not installed.

The packages cannot be uninstalled for a test, so `inspection.extras.require_extra`'s lookup is made
to miss them (the one place the commands ask); everything else runs as installed. The check must come
before any work: the datasets folder given does not exist, and a command that looked at it first
would name the folder instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from inspection.cli import main

HIDDEN = ("torch", "torchvision", "onnx")

# command line, the name the message gives the command, the hidden packages it needs
COMMANDS = [
    ("train --line-type hot --no-register", "training", "torch, torchvision"),
    ("quantize hot --no-register", "quantize", "onnx"),
    ("classifier hot --no-register", "classifier", "onnx, torch, torchvision"),
    ("ensemble hot-20261205-2 hot-20261205-1 --no-register", "ensemble", "onnx"),
    ("unknown-rule hot --no-register", "unknown-rule", "torch, onnx"),
]


@pytest.mark.parametrize(("argv", "name", "missing"), COMMANDS, ids=[c[1] for c in COMMANDS])
def test_a_missing_train_extra_is_named(argv: str, name: str, missing: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_find_spec = importlib.util.find_spec
    asked: list[str] = []

    def find_spec(module: str, *args: object) -> object:
        asked.append(module)
        return None if module in HIDDEN else real_find_spec(module, *args)

    monkeypatch.setattr("inspection.extras.importlib.util.find_spec", find_spec)
    code = main([*argv.split(), "--datasets", str(tmp_path / "no-such-folder")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert f"{name} needs the `train` extra ({missing} not installed): pip install -e '.[train]'" in err, err
    assert set(missing.split(", ")) <= set(asked)
