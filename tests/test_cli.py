"""The CLI: every subcommand has --help; bad input is one line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inspection.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_expected_subcommands_exist() -> None:
    assert "bench" in _subcommands()


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: steel-inspect" in capsys.readouterr().out


def test_domain_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "line.toml"
    bad.write_text("[line\n")
    command = next((c for c in ("camera", "run", "recorder") if c in _subcommands()), None)
    if command is None:
        pytest.skip("no config-reading subcommand yet")
    result = subprocess.run(
        [sys.executable, "-m", "inspection", command, "--config", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"steel-inspect {command}: error: {bad}: not valid TOML" in result.stderr
