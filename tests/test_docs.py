"""The documentation points at things that exist: relative links at files and headings, commands at real options.

Fast and without Spark: the links are read from the Markdown, the commands are checked against the argument
parsers `mfspark.commands.main.build_parser` builds (the same parsers `mfspark --help` prints).
"""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import pytest

from mfspark.commands.main import COMMANDS, build_parser
from tests.conftest import REPO

README = REPO / "README.md"
DOCUMENTS = [README, REPO / "CHANGELOG.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "benchmarks" / "results").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)(.*?)$.*?^\1\s*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
JOB = re.compile(r"(?:^|/)jobs/(\w+)\.py$")


def relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def prose(text: str) -> str:
    """The text without code blocks and inline code, where a bracket is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    text = path.read_text()
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def broken_links(path: Path) -> list[str]:
    text = prose(path.read_text())
    broken = []
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:: not checked here
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{relative(path)}: {target} (no file {linked})")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{relative(path)}: {target} (no heading #{anchor} in {relative(linked)})")
    return broken


@pytest.mark.parametrize("path", DOCUMENTS, ids=relative)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path):
    assert path.is_file(), f"{relative(path)} is missing"
    broken = broken_links(path)
    assert not broken, "\n".join(broken)


@functools.cache
def job_commands() -> dict[str, str]:
    """jobs/NAME.py -> the mfspark command it runs (`main(["train", *sys.argv[1:]])`)."""
    found = {}
    for job in (REPO / "jobs").glob("*.py"):
        match = re.search(r"main\(\[\"([\w-]+)\"", job.read_text())
        if match:
            found[job.stem] = match.group(1)
    return found


@functools.cache
def options_of(command: str) -> frozenset[str]:
    parser = build_parser(command)
    # argparse has no public accessor for a subcommand's parser or its option strings
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return frozenset(subparsers.choices[command]._option_string_actions)


def shell_lines(text: str) -> list[str]:
    """The lines of every non-Python code block, continuation lines joined, comments dropped."""
    lines = []
    for block in FENCE.finditer(text):
        if block.group(2).strip().lower() in ("python", "py", "pycon"):
            continue
        body = block.group(0).split("\n", 1)[1].rsplit("\n", 1)[0].replace("\\\n", " ")
        lines += [re.split(r"(?:^|\s)#", line)[0] for line in body.splitlines()]
    return lines


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """(command, the words after it) for each mfspark command a shell line runs: `mfspark CMD`,
    `.venv/bin/mfspark CMD`, `python -m mfspark.commands.main CMD`, `spark-submit ... jobs/NAME.py`."""
    found = []
    for segment in re.split(r"&&|\|\||;|\$\(|\s\|\s", line):
        words = segment.split()
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value before the program
            words.pop(0)
        if not words:
            continue
        if Path(words[0]).name == "mfspark" and len(words) > 1:
            found.append((words[1], words[2:]))
        elif Path(words[0]).name.startswith("python") and words[1:2] == ["-m"] and words[2:3] \
                and words[2].split(".")[0] == "mfspark":
            if words[2] == "mfspark.commands.main":
                found.append((words[3] if len(words) > 3 else "", words[4:]))
            else:  # only mfspark.commands.main runs a command (`python -m mfspark` has no __main__)
                found.append((f"python -m {words[2]}", words[3:]))
        else:
            for i, word in enumerate(words):
                job = JOB.search(word)
                if job and Path(words[0]).name == "spark-submit":
                    found.append((job_commands().get(job.group(1), f"jobs/{job.group(1)}.py"), words[i + 1:]))
                    break
    return found


def unknown_commands_and_options(text: str) -> list[str]:
    problems = []
    for line in shell_lines(text):
        for command, words in invocations(line):
            if command not in COMMANDS:
                problems.append(f"{line.strip()!r}: no command {command!r}")
                continue
            for word in words:
                if word.startswith((">", "2>")):  # redirections: the command's words end here
                    break
                option = word.strip("[]()").split("=")[0]
                if option.startswith("--") and option not in options_of(command):
                    problems.append(f"{line.strip()!r}: mfspark {command} has no option {option}")
    return problems


def test_the_readme_shows_commands():
    assert len([i for line in shell_lines(README.read_text()) for i in invocations(line)]) >= 10


@pytest.mark.parametrize("path", [README, *sorted((REPO / "docs").glob("*.md"))], ids=relative)
def test_every_command_in_a_code_block_uses_real_subcommands_and_options(path):
    problems = unknown_commands_and_options(path.read_text())
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_a_fake_subcommand_and_option():
    text = "```bash\n.venv/bin/mfspark pipeline --dataset x --out o --no-such-option 3\nmfspark trian --input d\n" \
           "spark-submit --master m jobs/train_als.py --rank 4 --bogus\npython -m mfspark ingest --input d\n" \
           "cd /srv && .venv/bin/python -m mfspark.commands.main tune --ranks 5 --fake >> log 2>&1\n```\n"
    assert [problem.rsplit(": ", 1)[1] for problem in unknown_commands_and_options(text)] == [
        "mfspark pipeline has no option --no-such-option", "no command 'trian'", "mfspark train has no option --bogus",
        "no command 'python -m mfspark'", "mfspark tune has no option --fake"]


def test_the_link_check_catches_a_missing_file_and_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Two words\n\nsee [b](b.md), [here](#two-words), [gone](#gone), "
                                   "`[not a link](x.md)` and [ok](a.md#title)\n")
    targets = [problem.split(" (")[0].rsplit(": ", 1)[1] for problem in broken_links(tmp_path / "a.md")]
    assert targets == ["b.md", "#gone"]
