"""The docs stay true to the code: README.md and docs/*.md are checked against the tree as it is.

The manual quotes the code in ways that rot silently when the code moves on:
metric names, command lines (and the list of commands), links between
pages, and the paths and modules it names. Each test reads them from the Markdown and checks them against the
code itself (the metrics a process really registers, the options its
argument parser really has, the files git really holds), so a rename that
forgets the docs fails here, naming the page and line to fix.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
METRICS_PAGE = DOCS / "metrics.md"
README_MAX_LINES = 200  # the README is the front door; the manual lives in docs/

# Programs the docs show that are not this project's: their command lines are
# not checked. Anything else a code block runs must be one of ours (below),
# so a new kind of command is a decision, never skipped by accident.
FOREIGN_PROGRAMS = {"curl", "promtool", "docker", "pip", "pip3", ".venv/bin/pip", "apt", "apt-get", "sudo", "ray"}
# `python -m X` for modules that are not ours.
FOREIGN_MODULES = {"venv", "pip"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
# Inline code that starts like one of these is a command and is checked as one.
INLINE_COMMAND = re.compile(r"^(?:(?:\.venv/bin/)?python3? (?:-m |run_pipeline\.py)|run_pipeline\.py|actionpipe |make |bash tools/)")
# Inline code that names a file or folder of the repository, or one of its modules.
# A file has an extension, a folder ends in '/' (so `pipeline/ideal`, a ratio, is not a path).
REPO_PATH = re.compile(r"^(?:(?:pipeline|engines|tools|tests|configs|models|docs)/(?:[\w.-]+/)*(?:[\w-]+\.\w+)?|run_pipeline\.py|Makefile|pyproject\.toml)$")
MODULE = re.compile(r"^(?:pipeline|engines|tools)(?:\.\w+)+$")


# -- reading Markdown ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Where:
    page: Path
    line: int

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


@dataclass(frozen=True)
class CodeBlock:
    where: Where  # the line after the opening fence
    lang: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Page:
    path: Path
    blocks: tuple[CodeBlock, ...]
    prose: str  # the page with every fenced line blanked, so line numbers still count

    def line_of(self, offset: int) -> Where:
        return Where(self.path, self.prose.count("\n", 0, offset) + 1)


def read_page(path: Path) -> Page:
    blocks, prose, fence = [], [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence = (number + 1, stripped[3:].strip(), len(line) - len(line.lstrip()), [])
                prose.append("")
            else:
                prose.append(line)
            continue
        prose.append("")
        if stripped == "```":
            start, lang, indent, body = fence
            blocks.append(CodeBlock(Where(path, start), lang, tuple(body)))
            fence = None
        else:
            fence[3].append(line[fence[2]:] if line[:fence[2]].strip() == "" else line)
    assert fence is None, f"{path.relative_to(REPO_ROOT)}:{fence[0] - 1}: a code block is never closed"
    return Page(path, tuple(blocks), "\n".join(prose))


# An inline code span: backticks, anything but a blank line, the same backticks.
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)((?:[^\n]|\n(?![ \t]*\n))+?)(?<!`)\1(?!`)")


def inline_code(page: Page) -> Iterator[tuple[Where, str]]:
    for match in INLINE_CODE.finditer(page.prose):
        yield page.line_of(match.start()), " ".join(match.group(2).split())


def prose_without_code(page: Page) -> str:
    """The prose with code spans blanked (same length, newlines kept): a link inside code is not a link."""
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), page.prose)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: link text kept, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Page) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(page.prose):
        base = github_anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


@pytest.fixture(scope="module")
def pages() -> dict[Path, Page]:
    return {path: read_page(path) for path in PAGES}


# -- links --------------------------------------------------------------------------------------

def test_every_relative_link_resolves_to_a_file_and_heading(pages):
    broken = []
    for page in pages.values():
        text = prose_without_code(page)
        for match in LINK.finditer(text):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            where = page.line_of(match.start())
            path_part, _, anchor = target.partition("#")
            file = (page.path.parent / path_part).resolve() if path_part else page.path
            if not file.exists():
                broken.append(f"{where}: {target}: no file {file.relative_to(REPO_ROOT) if file.is_relative_to(REPO_ROOT) else file}")
                continue
            if not file.is_relative_to(REPO_ROOT):
                broken.append(f"{where}: {target}: outside the repository")
                continue
            if anchor:
                linked = pages.get(file) or (read_page(file) if file.suffix == ".md" else None)
                if linked is None or anchor not in anchors(linked):
                    broken.append(f"{where}: {target}: no heading #{anchor} in {file.relative_to(REPO_ROOT)}")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_every_docs_page_is_in_the_readme_index(pages):
    linked = {(README.parent / m.group(1).partition("#")[0]).resolve()
              for m in LINK.finditer(prose_without_code(pages[README]))}
    missing = [str(p.relative_to(REPO_ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages the README's index does not link (add a line for each): {missing}"


def test_the_readme_stays_a_front_door(pages):
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"
    # tests/system/test_api.py runs this block as written; here it must at least compile.
    example = [b for b in pages[README].blocks if b.lang == "python" and b.lines[:1] == ("from pipeline.api import ActionPipeline",)]
    assert len(example) == 1, "README.md must hold one ```python block starting 'from pipeline.api import ActionPipeline'"
    compile("\n".join(example[0].lines), f"{example[0].where}", "exec")


# -- paths and modules --------------------------------------------------------------------------

def tracked_paths() -> set[str]:
    """What git holds, files and the folders above them: the truth about the tree."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): the files on disk
        out = "\n".join(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*") if p.is_file())
    paths = set()
    for file in out.split():
        parts = file.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return paths


def resolve_dotted(name: str) -> object:
    """A module, or an attribute of one (``pipeline.api.ActionPipeline``)."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(name)


def test_every_path_and_module_the_docs_name_exists(pages):
    tracked = tracked_paths()
    missing = []
    for page in pages.values():
        for where, code in inline_code(page):
            if REPO_PATH.match(code) and code.rstrip("/") not in tracked:
                missing.append(f"{where}: `{code}` is not in the tree (git ls-files)")
            elif MODULE.match(code):
                try:
                    resolve_dotted(code)
                except (ImportError, AttributeError) as exc:
                    missing.append(f"{where}: `{code}` does not import: {exc}")
    assert not missing, "names of things that are not there:\n" + "\n".join(missing)


# -- commands -----------------------------------------------------------------------------------

class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(main: Callable, argv: list[str]) -> argparse.ArgumentParser:
    """The parser a command's ``main(argv)`` builds, taken at the moment it parses (nothing runs)."""
    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture):
        try:
            main(argv)
        except _Parsed as parsed:
            return parsed.parser
    raise AssertionError(f"{main.__module__}.main() returned without parsing its arguments")


def unknown_options(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    # Exact names only: argparse would accept an abbreviation, a reader should not have to guess.
    options = [a.split("=", 1)[0] for a in args if re.match(r"^--?[A-Za-z]", a)]
    return [o for o in options if o not in parser._option_string_actions]


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (REPO_ROOT / "Makefile").read_text(), re.M))


def check_command(tokens: list[str]) -> str | None:
    """None if the command line is one the tree can run as written, else why not."""
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value before the program
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    if program in FOREIGN_PROGRAMS:
        return None
    if program == "make":
        unknown = [t for t in args if not t.startswith("-") and "=" not in t and t not in make_targets()]
        return f"no Makefile target {unknown}" if unknown else None
    if program == "bash":
        script = REPO_ROOT / args[0]
        if not script.is_file():
            return f"no script {args[0]}"
        labels = set(re.findall(r"^\s*([\w|-]+)\)", script.read_text(), re.M))
        cases = {case for label in labels for case in label.split("|")}
        unknown = [a for a in args[1:] if a not in cases]
        return f"{args[0]} has no case {unknown}" if unknown else None
    if program == "actionpipe":
        from pipeline.cli import console

        if args[:1] == ["cluster"]:
            return _subcommand_options(parser_of(console, args), args[1:])
        if args[:1] != ["run"]:
            return f"actionpipe has two commands, run and cluster; not {args[:1]}"
        return _options(parser_of(console, args), args[1:])
    if program.endswith("run_pipeline.py"):
        return check_command(["python", program, *args])
    if program not in PYTHONS:
        return f"unknown program {program!r}: if it is not ours, add it to FOREIGN_PROGRAMS"
    if args[:1] == ["-c"]:
        compile(args[1], "<python -c>", "exec")
        return None
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module in FOREIGN_MODULES:
            return None
        if module == "pytest":
            missing = [a for a in rest if not a.startswith("-") and not (REPO_ROOT / a.split("::")[0]).exists()]
            return f"no tests at {missing}" if missing else None
        if not module.startswith("tools."):
            return f"unknown module {module!r}: if it is not ours, add it to FOREIGN_MODULES"
        try:
            main = importlib.import_module(module).main
        except (ImportError, AttributeError) as exc:
            return f"{module} is not a command: {exc}"
        return _options(parser_of(main, rest), rest)
    if args and args[0].endswith("run_pipeline.py"):
        if not (REPO_ROOT / "run_pipeline.py").is_file():
            return "no run_pipeline.py"
        import run_pipeline

        return _options(parser_of(run_pipeline.main, args[1:]), args[1:])
    return f"a python command line the docs test does not know: {tokens}"


def _options(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    unknown = unknown_options(parser, args)
    return f"{parser.prog} has no option {unknown}" if unknown else None


def _subcommand_options(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """A command with subcommands (``actionpipe cluster start --config ...``): its own options, then a
    subcommand it has, then that subcommand's options. The group's name alone (prose naming it) is fine."""
    rest = list(args)
    while rest and rest[0].startswith("-"):  # the group's options come before the subcommand
        option, _, value = rest.pop(0).partition("=")
        action = parser._option_string_actions.get(option)
        if action is None:
            return f"{parser.prog} has no option {option}"
        if action.nargs != 0 and not value and rest:
            rest.pop(0)
    if not rest:
        return None
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if rest[0] not in subparsers.choices:
        return f"{parser.prog} has no command {rest[0]!r} (only {', '.join(subparsers.choices)})"
    return _options(subparsers.choices[rest[0]], rest[1:])


def shell_commands(line: str) -> Iterator[list[str]]:
    """Each simple command of a shell line (split at &&, ||, ;, |), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def commands(page: Page) -> Iterator[tuple[Where, str]]:
    for block in page.blocks:
        if block.lang not in ("", "bash", "sh", "shell", "console"):
            continue
        pending, start = "", 0
        for offset, line in enumerate(block.lines):
            if block.lang in ("", "console"):  # output with the command on a '$ ' line
                if line.startswith("$ "):
                    yield Where(page.path, block.where.line + offset), line[2:]
                continue
            if not pending:
                start = offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text, pending = pending + line, ""
            if text.strip() and not text.lstrip().startswith("#"):
                yield Where(page.path, block.where.line + start), text.strip()
    for where, code in inline_code(page):
        if INLINE_COMMAND.match(code):
            yield where, code


def test_every_tools_command_is_listed(pages):
    # A command is a tools/ module run as a script; the library modules beneath are not commands.
    commands_page = pages[DOCS / "commands.md"].prose
    unlisted = [f"python -m tools.{path.stem}" for path in sorted((REPO_ROOT / "tools").glob("*.py"))
                if '__name__ == "__main__"' in path.read_text(encoding="utf-8")
                and f"`python -m tools.{path.stem}`" not in commands_page]
    assert not unlisted, f"commands docs/commands.md does not list (add a row for each): {unlisted}"


def test_every_command_the_docs_show_runs_as_written(pages):
    wrong = []
    checked = 0
    for page in pages.values():
        for where, line in commands(page):
            for tokens in shell_commands(line):
                checked += 1
                problem = check_command(tokens)
                if problem:
                    wrong.append(f"{where}: {' '.join(tokens)}\n    {problem}")
    assert checked > 20, f"only {checked} commands found: is the Markdown reader broken?"
    assert not wrong, "commands that would not run as written:\n" + "\n".join(wrong)


# -- metrics ------------------------------------------------------------------------------------

# Run in a fresh process: prometheus_client picks its multiprocess mode when it
# is first imported, from PROMETHEUS_MULTIPROC_DIR. Every metric a stage may
# touch is touched once, then the supervisor's registry (which also yields its
# own families) is collected as a scrape would.
_REGISTERED = r'''
import dataclasses, json, sys
from pathlib import Path
from pipeline.cluster.metrics import ClusterMetrics
from pipeline.metrics import StageMetrics, SupervisorState, build_registry

metrics = StageMetrics.create()
touch = {"counter": lambda m: m.inc(), "gauge": lambda m: m.set(1), "histogram": lambda m: m.observe(0.1)}
for field in dataclasses.fields(metrics):
    metric = getattr(metrics, field.name)
    labels = metric._labelnames
    touch[metric._type](metric.labels(*["x"] * len(labels)) if labels else metric)
state = lambda: SupervisorState({"s": "live"}, {"s": "opened"}, {"embed:0": 1}, {"embed": 1}, {("s", "stage_crash"): 1})
families = []
for family in build_registry(Path(sys.argv[1]), state).collect():
    labels = sorted({name for sample in family.samples for name in sample.labels} - {"le"})
    families.append({"name": family.name, "type": family.type, "labels": labels})
# Cluster mode: the coordinator's own registry (made after the scrape above, so that its values stay out of
# the multiprocess files the supervisor's registry reads); its per-node gauge touched once.
cluster = ClusterMetrics()
cluster.node_streams.labels("x").set(1)
for family in cluster.registry.collect():
    labels = sorted({name for sample in family.samples for name in sample.labels})
    families.append({"name": family.name, "type": family.type, "labels": labels})
print(json.dumps(families))
'''


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict[str, dict]:
    """Every metric the code registers (a pipeline's, and a cluster coordinator's), by the name the docs use for it: a counter by its
    ``_total`` series (what a query names), a gauge by its name, a histogram by its family
    name (its series are that name plus ``_bucket``, ``_sum`` and ``_count``)."""
    folder = tmp_path_factory.mktemp("metrics")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _REGISTERED, str(folder)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    families = json.loads(out.stdout)
    assert len(families) > 10, families
    return {f["name"] + ("_total" if f["type"] == "counter" else ""): f for f in families}


METRIC_ROW = re.compile(r"^\|\s*`(actionpipe_\w+)`\s*\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|", re.M)
METRIC_NAME = re.compile(r"\bactionpipe_[a-z0-9_]*[a-z0-9]")


def documented_metrics(pages) -> dict[str, tuple[str, set[str], Where]]:
    """The rows of docs/metrics.md's table: name -> (type, labels, where)."""
    page = pages[METRICS_PAGE]
    rows: dict[str, tuple[str, set[str], Where]] = {}
    for match in METRIC_ROW.finditer(page.prose):
        name, kind, labels = match.groups()
        assert name not in rows, f"{page.line_of(match.start())}: {name} has two rows"
        rows[name] = (kind, {label.strip(" `") for label in labels.split(",") if label.strip(" `")},
                      page.line_of(match.start()))
    return rows


def test_every_registered_metric_is_documented_with_its_type_and_labels(pages, registered):
    documented = documented_metrics(pages)
    problems = [f"{name} ({family['type']}; labels {', '.join(family['labels']) or 'none'}) has no row in docs/metrics.md"
                for name, family in sorted(registered.items()) if name not in documented]
    for name, (kind, labels, where) in sorted(documented.items()):
        family = registered.get(name)
        if family is None:
            problems.append(f"{where}: {name} is not a metric the code registers")
            continue
        if kind != family["type"]:
            problems.append(f"{where}: {name} is a {family['type']}, the table says {kind!r}")
        if labels != set(family["labels"]):
            problems.append(f"{where}: {name} has labels {family['labels']}, the table says {sorted(labels)}")
    assert not problems, "\n".join(problems)


def test_every_metric_named_in_the_docs_is_registered(pages, registered):
    series = set(registered)
    for name, family in registered.items():
        if family["type"] == "histogram":
            series.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    unknown = []
    for page in pages.values():
        found = [(page.line_of(m.start()), m.group(0)) for m in METRIC_NAME.finditer(page.prose)]
        for block in page.blocks:  # PromQL in a code block names series too
            found += [(Where(page.path, block.where.line + i), m.group(0))
                      for i, line in enumerate(block.lines) for m in METRIC_NAME.finditer(line)]
        unknown += [f"{where}: {name}" for where, name in found if name not in series]
    assert not unknown, ("metric names the code does not register (counters are named with _total, "
                         "histograms by their family or its _bucket/_sum/_count):\n" + "\n".join(unknown))
