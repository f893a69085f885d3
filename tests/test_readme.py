"""The README against the project: what a newcomer copies from it must work.

- every `steel-inspect ...` command it shows (shell code blocks, inline code in tables and text,
  and the "Other commands" list) names subcommands that exist and flags their parser accepts,
  with values from the flag's choices where it has them; found by introspecting the parser that
  `inspection.cli` builds, nothing is run;
- its "Run the tests" command is byte for byte the last line of `.ci/run`, which CI runs;
- its demo command installs the `console` extra that `demo` needs, and every extra it installs
  exists in pyproject.toml.

The checks are functions of the README's text, so a test also feeds them a broken README and
proves they catch it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inspection.cli import build_parser
from tests.conftest import REPO

README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"
PYPROJECT = REPO / "pyproject.toml"

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}  # other fences hold output, diagrams or config
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # F, ID, PATH, VERSION: stands for a value, not one of the choices


@dataclass(frozen=True)
class Shown:
    """A `steel-inspect` command as the README shows it."""

    line: int  # 1-based line of the README where it starts
    text: str  # as shown, whitespace normalised
    words: tuple[str, ...]  # what follows `steel-inspect`
    complete: bool  # a whole command line (code block, table), not a command named in a sentence


@dataclass(frozen=True)
class Block:
    """A fenced code block (`language` set, possibly "") or a paragraph of prose / table rows (None)."""

    language: str | None
    start: int  # 1-based line of its first line of content
    lines: tuple[str, ...]


def blocks(text: str) -> Iterator[Block]:
    """The README's fenced code blocks and paragraphs (a table is one paragraph), in order."""
    lines = text.splitlines()
    i, prose, prose_start = 0, [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            if prose:
                yield Block(None, prose_start, tuple(prose))
                prose = []
            language, start, body = line[3:].strip(), i + 2, []  # its content starts on the next line
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            yield Block(language, start, tuple(body))
        elif not line.strip():
            if prose:
                yield Block(None, prose_start, tuple(prose))
                prose = []
        else:
            if not prose:
                prose_start = i + 1
            prose.append(line)
        i += 1
    if prose:
        yield Block(None, prose_start, tuple(prose))


def _after_program(words: list[str]) -> list[str] | None:
    """The words after `steel-inspect` when `words` (one simple command) runs it, else None."""
    rest = list(words)
    while rest and ENV_ASSIGNMENT.match(rest[0]):  # PYLON_CAMEMU=1 steel-inspect ...
        rest.pop(0)
    if rest and Path(rest[0]).name == "steel-inspect":
        return rest[1:]
    return None


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at &&, ||, ;, |), each as its words."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def readme_commands(text: str) -> Iterator[Shown]:
    """Every `steel-inspect` command the README shows."""
    for block in blocks(text):
        if block.language is not None:
            if block.language not in SHELL_LANGUAGES:
                continue
            logical: list[tuple[int, str]] = []  # lines continued with a backslash joined
            for offset, line in enumerate(block.lines):
                if logical and logical[-1][1].endswith("\\"):
                    logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line)
                else:
                    logical.append((offset, line.lstrip().removeprefix("$ ")))
            for offset, line in logical:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                for command in shell_commands(line):
                    if (words := _after_program(command)) is not None:
                        yield Shown(block.start + offset, " ".join(line.split()), tuple(words), True)
            continue
        paragraph = "\n".join(block.lines)
        other_commands = paragraph.startswith("Other commands:")
        for match in re.finditer(r"`([^`]+)`", paragraph):
            line = block.start + paragraph.count("\n", 0, match.start())
            shown = " ".join(match.group(1).replace("\\|", "|").split())  # a table cell escapes its pipes
            if "steel-inspect" not in shown and not other_commands:
                continue
            try:
                words = shlex.split(shown)
            except ValueError:  # an unbalanced quote: take the words as they stand
                words = shown.split()
            in_table = block.lines[line - block.start].lstrip().startswith("|")
            if other_commands and not shown.startswith("-"):  # "Other commands: `predict`, `models list|show`"
                yield Shown(line, shown, tuple(words), False)
            elif (after := _after_program(words)) is not None:  # [--config F]: an optional flag
                yield Shown(line, shown, tuple(word.strip("[]") for word in after), in_table)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse has no public way to list a parser's subcommands or options: its actions are the record
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def command_problems(parser: argparse.ArgumentParser, words: tuple[str, ...], path: tuple[str, ...] = (),
                     complete: bool = False) -> list[str]:
    """What in `words` (after `steel-inspect`) the CLI does not have: subcommands, flags, choices;
    for a `complete` command line also the subcommand and the flags it cannot do without."""
    path = path or ("steel-inspect",)
    words = tuple(words)
    subcommands = _subcommands(parser)
    if subcommands and words and not words[0].startswith("-"):
        names = words[0].split("|")  # `models list|show|promote`: each one must exist
        missing = [n for n in names if n not in subcommands]
        if missing:
            return [f"`{' '.join(path)}` has no subcommand {', '.join(missing)} "
                    f"(it has: {', '.join(sorted(subcommands))})"]
        return [problem for name in names
                for problem in command_problems(subcommands[name], words[1:], (*path, name), complete)]
    problems = []
    if complete and subcommands:
        problems.append(f"`{' '.join(path)}` needs a subcommand (one of: {', '.join(sorted(subcommands))})")
    given = {word.split("=", 1)[0] for word in words}
    for action in parser._actions:
        if complete and action.required and action.option_strings and not given & set(action.option_strings):
            problems.append(f"`{' '.join(path)}` needs {action.option_strings[-1]}")
    options = parser._option_string_actions
    for i, word in enumerate(words):
        if not word.startswith("-") or word == "-" or re.fullmatch(r"-[\d.]+", word):
            continue
        flag = word.split("=", 1)[0]
        action = options.get(flag)
        if action is None:
            known = sorted(s for s in options if s.startswith("--"))
            problems.append(f"`{' '.join(path)}` has no flag {flag} (it has: {', '.join(known)})")
            continue
        if action.choices is None or "=" in word:
            continue
        values = []
        for value in words[i + 1:]:
            if value.startswith("-") or (values and action.nargs in (None, "?")):
                break
            values += value.split("|")  # --format pdf|csv|json
        wrong = [v for v in values if not PLACEHOLDER.match(v) and v not in {str(c) for c in action.choices}]
        if wrong:
            problems.append(f"`{' '.join(path)} {flag}` does not accept {', '.join(wrong)} "
                            f"(choices: {', '.join(map(str, action.choices))})")
    return problems


def cli_problems(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """One line per problem, naming the README line and the command as shown."""
    return [f"README.md:{shown.line}: `{shown.text}`: {problem}"
            for shown in readme_commands(text)
            for problem in command_problems(parser, shown.words, complete=shown.complete)]


def _block_after(text: str, paragraph_start: str) -> Block | None:
    """The first code block after the paragraph that starts with `paragraph_start`."""
    found = False
    for block in blocks(text):
        if block.language is None and block.lines[0].startswith(paragraph_start):
            found = True
        elif found and block.language is not None:
            return block
    return None


def ci_command_problems(text: str, ci_script: bytes) -> list[str]:
    """The README's "Run the tests" command against the last non-empty line of `.ci/run`."""
    block = _block_after(text, "Run the tests")
    if block is None or not any(line.strip() for line in block.lines):
        return ["README.md: no code block after the paragraph 'Run the tests'"]
    shown = next(line for line in block.lines if line.strip())
    ci_line = [line for line in ci_script.splitlines() if line.strip()][-1]
    if shown.encode("utf-8") != ci_line:
        return [f"README.md:{block.start}: the test command differs from the last line of .ci/run:\n"
                f"  README: {shown}\n  .ci/run: {ci_line.decode('utf-8', 'replace')}"]
    return []



def demo_problems(text: str, extras: set[str]) -> list[str]:
    """The demo command installs the console extra before it runs `steel-inspect demo`."""
    block = _block_after(text, "Run the demo line")
    if block is None:
        return ["README.md: no code block after the paragraph 'Run the demo line'"]
    for offset, line in enumerate(block.lines):
        commands = shell_commands(line) if line.strip() else []
        demo = next((i for i, c in enumerate(commands) if (_after_program(c) or ["?"])[0] == "demo"), None)
        if demo is None:
            continue
        installed: set[str] = set()
        for command in commands[:demo]:
            if "install" not in command or not any(Path(word).name.startswith("pip") for word in command):
                continue
            for word in command:  # '.[console]' or 'steel-inspect[console,dev]'
                if extras_named := re.fullmatch(r"[\w./-]*\[([^\]]*)\]", word):
                    installed |= {e.strip() for e in extras_named.group(1).split(",") if e.strip()}
        problems = [f"README.md:{block.start + offset}: the demo command installs the extra {e!r}, which "
                    f"pyproject.toml does not define" for e in sorted(installed - extras)]
        if "console" not in installed:
            problems.append(f"README.md:{block.start + offset}: the demo command does not install the console "
                            f"extra before `steel-inspect demo`: {line.strip()}")
        return problems
    return [f"README.md:{block.start}: the demo block runs no `steel-inspect demo`"]


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def _extras() -> set[str]:
    return set(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"])


def test_readme_commands_name_real_subcommands_and_flags(readme: str, parser: argparse.ArgumentParser) -> None:
    shown = list(readme_commands(readme))
    assert len(shown) >= 20, shown  # the README shows many: finding few means the extraction broke
    problems = cli_problems(readme, parser)
    assert not problems, "\n".join(problems)


def test_readme_test_command_is_what_ci_runs(readme: str) -> None:
    problems = ci_command_problems(readme, CI_RUN.read_bytes())
    assert not problems, "\n".join(problems)


def test_readme_demo_command_installs_the_console_extra(readme: str) -> None:
    problems = demo_problems(readme, _extras())
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_broken_readme(readme: str, parser: argparse.ArgumentParser) -> None:
    """A README with a flag, a subcommand and a choice that do not exist, a test command CI does
    not run and a demo without its extra: every one is reported, with its line."""
    broken = (readme.replace("[--max-frames N]", "[--max-framez N]", 1)
              .replace("--format pdf|csv|json", "--format pdf|csv|docx", 1)
              .replace(".venv/bin/steel-inspect models promote", ".venv/bin/steel-inspect models promot", 1)
              .replace("`crops prune`", "`crops purge`", 1)
              .replace("predict --model hot --images DIR", "predict --model hot", 1)
              .replace(".venv/bin/ruff check . && .venv/bin/python -m pytest",
                       ".venv/bin/python -m pytest", 1)
              .replace("pip install -e '.[console]'", "pip install -e '.[consle]'", 1))
    assert broken.count("\n") == readme.count("\n")  # the same lines, so the reported numbers match
    problems = "\n".join(cli_problems(broken, parser))
    line_of = {needle: readme[:readme.index(needle)].count("\n") + 1
               for needle in ("[--max-frames N]", "models promote VERSION", "`crops prune`", "predict --model hot")}
    assert f"README.md:{line_of['[--max-frames N]']}: " in problems
    assert "`steel-inspect run` has no flag --max-framez" in problems
    assert "`steel-inspect report --format` does not accept docx" in problems
    assert f"README.md:{line_of['models promote VERSION']}: " in problems
    assert "`steel-inspect models` has no subcommand promot" in problems
    assert f"README.md:{line_of['`crops prune`']}: " in problems
    assert "`steel-inspect crops` has no subcommand purge" in problems
    assert f"README.md:{line_of['predict --model hot']}: " in problems
    assert "`steel-inspect predict` needs --images" in problems
    assert len(problems.splitlines()) == 5, problems
    assert ci_command_problems(broken, CI_RUN.read_bytes())
    demo = demo_problems(broken, _extras())
    assert any("'consle', which pyproject.toml does not define" in p for p in demo), demo
    assert any("does not install the console extra" in p for p in demo), demo
