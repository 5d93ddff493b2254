"""Every command the docs show is one the real CLI accepts: README.md, docs/*.md, docker/README.md.

Each `orchestrator ...` line of a shell code block is parsed strictly by the click command it
names (an unknown command or option, a missing argument or a bad choice fails, naming the doc file
and line); nothing long runs: only `--dry-run` commands are invoked, as they train nothing. An
`orchestrator ...` code span in prose is parsed too, leniently (it may leave out an argument, as
in "`orchestrator predict --model` loads ..."). Every `make` target named must be in the Makefile,
repository paths in commands must exist, the README stays a front door (at most 12,000 bytes) and
every relative link of the README and docs/ resolves, anchors included.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOC_FILES = (README, *sorted(DOCS.glob("*.md")), ROOT / "docker" / "README.md")
README_MAX_BYTES = 12_000

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
# An untagged block is shell only line by line: a command starts with one of these (the rest of
# such a block is pasted output).
UNTAGGED_COMMAND = re.compile(r"(\$ )?(orchestrator|make) ")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
CODE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Repository paths a command may name; each must exist (placeholders such as SPACE.yaml do not
# start with these).
REPO_PATH = re.compile(r"^(configs|search_spaces|bench|docker|scripts|docs)/[\w./-]+$")
REDIRECT = re.compile(r"^\d*[<>]")


@dataclass(frozen=True)
class DocCommand:
    """One command line of the docs: the program (`orchestrator` or `make`) and its arguments."""

    where: str  # "docs/sweeps.md:12"
    program: str
    args: tuple[str, ...]
    inline: bool = False  # a code span in prose, not a code block

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join([self.program, *self.args])}"


@dataclass(frozen=True)
class ShellLine:
    where: str
    text: str


def shell_lines(markdown: str, name: str) -> Iterator[ShellLine]:
    """The command lines of `markdown`'s shell code blocks: continuations joined, `$ ` prompts
    stripped; python, yaml and other blocks skipped."""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening["fence"], opening["lang"].lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if lang in SHELL_LANGUAGES or lang == "":
            yield from block_commands(lines[i + 1 : end], lang, name, first=i + 2)
        i = end + 1


def block_commands(block: list[str], lang: str, name: str, first: int) -> Iterator[ShellLine]:
    j = 0
    while j < len(block):
        start, text = j, block[j].strip()
        j += 1
        while text.endswith("\\") and j < len(block):
            text = f"{text[:-1].rstrip()} {block[j].strip()}"
            j += 1
        if lang == "console" and not text.startswith("$ "):
            continue  # output
        if lang == "" and not UNTAGGED_COMMAND.match(text):
            continue
        yield ShellLine(f"{name}:{first + start}", text.removeprefix("$ "))


def tokens(text: str) -> list[str]:
    """Shell words, with `|`, `&&`, `;`, redirections ... as their own tokens; comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def segments(words: list[str]) -> Iterator[list[str]]:
    """The simple commands of a line (split at `|`, `&&`, `;`, ...), without redirections."""
    current: list[str] = []
    skip_next = False
    for k, word in enumerate(words):
        if skip_next:
            skip_next = False
        elif REDIRECT.match(word) and not word[-1:].isdigit():
            skip_next = True  # its target
        elif word.isdigit() and k + 1 < len(words) and REDIRECT.match(words[k + 1]):
            continue  # a file descriptor: `2>&1`
        elif word and set(word) <= set("|&;()"):
            yield current
            current = []
        else:
            current.append(word)
    yield current


def commands_of(line: ShellLine) -> Iterator[DocCommand]:
    """The `orchestrator` and `make` invocations of one shell line, also behind `env VAR=..`,
    `docker compose exec NODE` or `kubectl exec POD --`."""
    for words in segments(tokens(line.text)):
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            words = words[1:]  # VAR=value prefixes
        if words and words[0] == "make":
            yield DocCommand(line.where, "make", tuple(words[1:]))
        for k, word in enumerate(words):
            if word == "orchestrator" or word.endswith("/bin/orchestrator"):
                yield DocCommand(line.where, "orchestrator", tuple(words[k + 1 :]))
                break


def inline_commands(markdown: str, name: str) -> Iterator[DocCommand]:
    """`orchestrator ...` and `make ...` code spans outside code blocks (a span may wrap)."""
    text = "\n".join(prose_lines(markdown))
    for span in CODE_SPAN.finditer(text):
        content = " ".join(span[1].split())
        where = f"{name}:{text.count(chr(10), 0, span.start()) + 1}"
        for program in ("orchestrator", "make"):
            if content.startswith(f"{program} "):
                yield DocCommand(where, program, tuple(shlex.split(content)[1:]), inline=True)


def prose_lines(markdown: str) -> list[str]:
    """The lines of `markdown`, each line of a fenced code block (fences included) blanked."""
    prose, fence = [], None
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening["fence"]
            prose.append("")
        elif fence is not None:
            prose.append("")
            if line.strip().startswith(fence):
                fence = None
        else:
            prose.append(line)
    return prose


def doc_commands(path: Path) -> list[DocCommand]:
    name = str(path.relative_to(ROOT))
    markdown = path.read_text()
    found = [c for line in shell_lines(markdown, name) for c in commands_of(line)]
    return found + list(inline_commands(markdown, name))


def all_doc_commands() -> list[DocCommand]:
    return [command for path in DOC_FILES if path.is_file() for command in doc_commands(path)]


def parse_cli(args: tuple[str, ...] | list[str]) -> click.Context:
    """Parse `orchestrator ARGS` as click would run it, down to the leaf command, without
    invoking it: raises click's UsageError / BadParameter for what the CLI would reject."""
    ctx = main.make_context("orchestrator", list(args))
    command: click.Command = main
    while isinstance(command, click.Group):
        protected = ctx.__dict__.get("_protected_args", ctx.__dict__.get("protected_args", []))
        name, sub, rest = command.resolve_command(ctx, [*protected, *ctx.args])
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return ctx


def rejection(command: DocCommand) -> str | None:
    """Why the real CLI rejects `command`, or None. A doc path the user would have (e.g.
    results/...) may be refused as absent; a code span may leave out arguments."""
    try:
        parse_cli(command.args)
    except click.BadParameter as err:
        absent = isinstance(err.param and err.param.type, click.Path) and "does not exist" in (
            err.message
        )
        if absent or (command.inline and isinstance(err, click.MissingParameter)):
            return None
        return err.format_message()
    except click.BadOptionUsage as err:
        if command.inline and "requires an argument" in err.message:
            return None
        return err.format_message()
    except click.UsageError as err:
        return err.format_message()
    return None


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m[1] for m in re.finditer(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.MULTILINE)}


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = (re.match(r"#{1,6} (.*)", line) for line in prose_lines(path.read_text()))
    return {slug(m[1]) for m in headings if m}


def broken_links(path: Path) -> list[str]:
    """The relative links of a markdown file whose file, or heading, does not exist."""
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    return broken


COMMANDS = all_doc_commands()
CLI_COMMANDS = [c for c in COMMANDS if c.program == "orchestrator"]
MAKE_COMMANDS = [c for c in COMMANDS if c.program == "make"]
DRY_RUNS = [c for c in CLI_COMMANDS if "--dry-run" in c.args and not c.inline]


def test_the_readme_is_a_front_door_of_at_most_12000_bytes():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move reference parts to docs/"


def test_every_docs_page_is_linked_from_the_readme_and_exists():
    linked = {
        (ROOT / t.partition("#")[0]).resolve()
        for t in LINK.findall(README.read_text())
        if t.startswith("docs/") and t.partition("#")[0].endswith(".md")
    }
    assert linked, "the README links no docs/ page"
    assert not [p for p in linked if not p.is_file()], "README links a docs page that is missing"
    assert {p.resolve() for p in DOCS.glob("*.md")} <= linked, "a docs/ page the README omits"


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    assert not broken_links(path), f"{path.relative_to(ROOT)}: broken links"


def test_the_docs_show_every_command_of_the_cli():
    shown = {c.args[0] for c in CLI_COMMANDS if c.args and not c.inline}
    shown |= {" ".join(c.args[:2]) for c in CLI_COMMANDS if c.args[:1] == ("data",)}
    expected = set(main.commands) | {f"data {sub}" for sub in ("fetch", "check")}
    assert expected <= shown, f"commands no code block shows: {sorted(expected - shown)}"
    assert len([c for c in CLI_COMMANDS if not c.inline]) >= 30


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=str)
def test_doc_command_is_accepted_by_the_cli(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # relative paths are the repository's
    reason = rejection(command)
    assert reason is None, f"{command}\n  the CLI rejects it: {reason}"


def test_repository_paths_in_doc_commands_exist():
    """configs/..., search_spaces/..., bench/..., docker/... named by any shell line of the docs
    (`python bench/...`, `kubectl apply -f docker/...` too)."""
    missing = [
        f"{line.where}: {word}"
        for path in DOC_FILES
        for line in shell_lines(path.read_text(), str(path.relative_to(ROOT)))
        for word in tokens(line.text)
        if REPO_PATH.match(word) and not (ROOT / word).exists()
    ]
    assert not missing, f"no such file in the repository: {missing}"


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=str)
def test_doc_make_targets_exist(command):
    targets = [a for a in command.args if not a.startswith("-") and "=" not in a]
    assert targets and set(targets) <= make_targets(), f"{command}: not a Makefile target"


@pytest.mark.parametrize("command", DRY_RUNS, ids=str)
def test_doc_dry_runs_run(command, monkeypatch, data_dir):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(data_dir))  # a dry run checks it is there
    result = CliRunner().invoke(main, list(command.args))
    assert result.exit_code == 0, f"{command}\n{result.output}"


# The checker itself: it must be able to fail.


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "--no-such-flag", "x.yaml"],  # unknown option
        ["sweeps", "x.yaml"],  # unknown command
        ["data", "fecth"],  # unknown subcommand
        ["sweep"],  # missing SPACE.yaml
        ["ensemble", "--sweep", "quickstart"],  # missing required --top
        ["ensemble", "--top", "3", "--method", "median"],  # bad choice
        ["sweep", "x.yaml", "--num-samples", "0"],  # out of range
        ["train", "configs/quickstart.yaml", "extra-argument"],
    ],
)
def test_the_checker_rejects_what_the_cli_rejects(args):
    assert rejection(DocCommand("made-up.md:1", "orchestrator", tuple(args))) is not None


def test_the_checker_accepts_a_real_command():
    args = ("ensemble", "--sweep", "quickstart", "--top", "3", "--dev", "sweep")
    assert rejection(DocCommand("made-up.md:1", "orchestrator", args)) is None


def test_the_extractor_finds_commands_and_skips_the_rest():
    markdown = "\n".join(
        [
            "Run `orchestrator ensemble --top 3` or `make quickstart`.",
            "```bash",
            "orchestrator sweep a.yaml --dry-run   # a comment",
            "MLFLOW_TRACKING_URI=x orchestrator report \\",
            "  smart --no-mlflow",
            "printf 'a\\tb\\n' | orchestrator predict --checkpoint DIR - 2>/dev/null",
            "```",
            "```python",
            "orchestrator sweep not-a-shell-line.yaml",
            "```",
            "```",
            "sweep quickstart: 6 trials (pasted output)",
            "$ orchestrator ui --port 5001",
            "```",
            "```console",
            "$ make test",
            "orchestrator output line",
            "```",
        ]
    )
    path = ROOT / "made-up.md"
    found = [c for line in shell_lines(markdown, path.name) for c in commands_of(line)]
    found += inline_commands(markdown, path.name)
    assert [str(c) for c in found] == [
        "made-up.md:3: orchestrator sweep a.yaml --dry-run",
        "made-up.md:4: orchestrator report smart --no-mlflow",
        "made-up.md:6: orchestrator predict --checkpoint DIR -",
        "made-up.md:13: orchestrator ui --port 5001",
        "made-up.md:16: make test",
        "made-up.md:1: orchestrator ensemble --top 3",
        "made-up.md:1: make quickstart",
    ]
