"""inspection.code_version on a real throw-away git repository: the commit, -dirty, unknown."""

from __future__ import annotations

import subprocess
from pathlib import Path

from inspection.code_version import code_version


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_commit_then_dirty_then_unknown_outside_a_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "one")
    head = git(repo, "rev-parse", "--short=12", "HEAD")
    assert code_version(repo) == head
    (repo / "a.txt").write_text("two\n")
    assert code_version(repo) == f"{head}-dirty"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert code_version(outside) == "unknown"
