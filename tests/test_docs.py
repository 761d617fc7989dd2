"""The docs tell the truth: the commands they quote exist, every failure category and
triage rule has its place in docs/triage.md, and the ari.toml they show is valid.

Fast and self-contained: the CLI answers `--help` in this process (typer's CliRunner),
configuration examples go through the real parser; no node, no CASA.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ari_console import triage
from ari_console.archive.client import SelectionRules
from ari_console.cli import app
from ari_console.config import Campaign, Node, parse_config
from ari_console.engine import retry_decision

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
TRIAGE_DOC = DOCS / "triage.md"
GUIDE = DOCS / "operator-guide.md"

FENCE = re.compile(r"^[ \t]*```([\w-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")
SEPARATORS = {"&&", "||", "|", ";"}
STATES = ("queued", "held", "skipped", "failed")


# -- reading the pages -----------------------------------------------------------------------

def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, indented ones (in lists) too."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return FENCE.sub("", text)


def ari_words(line: str) -> list[list[str]]:
    """The `ari ...` commands on one shell line, as words (comments, `&&` and pipes split off).

    >>> ari_words("ari init x && cd x   # a comment")
    [['ari', 'init', 'x']]
    """
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:]
    if not re.search(r"(?:^|&&|\||;)\s*ari\s", line + " "):
        return []
    commands, current = [], []
    for word in shlex.split(line, comments=True):
        if word in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    return [c for c in commands if c and c[0] == "ari"]


def quoted_commands(inline: bool) -> list[tuple[str, list[str]]]:
    """(where, words) for every `ari` command in the pages' code blocks (or inline code)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        if inline:
            spans = [" ".join(m.group(1).split()) for m in INLINE.finditer(prose(text))]
            lines = [s for s in spans if s.startswith("ari ")]
        else:
            lines = [line for _, body in code_blocks(text) for line in body.splitlines()]
        for line in lines:
            for words in ari_words(line):
                found.append((f"{page.relative_to(ROOT)}: {' '.join(words)}", words))
    return found


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of every markdown section, code blocks left out."""
    parts = re.split(r"^(#{1,6} .*)$", prose(text), flags=re.M)
    return [(parts[i].lstrip("#").strip(), parts[i + 1]) for i in range(1, len(parts), 2)]


def paragraph_after(body: str, label: str) -> str | None:
    """The paragraph of ``body`` that starts with ``label`` (joined onto one line), or None."""
    for para in re.split(r"\n\s*\n", body):
        if para.strip().startswith(label):
            return " ".join(para.split())
    return None


def names_in(text: str) -> set[str]:
    """The backticked names in ``text``."""
    return set(re.findall(r"`([^`]+)`", text))


# -- the CLI's own view --------------------------------------------------------------------------

CLI = typer.main.get_command(app)


def option_names(command) -> set[str]:
    """Every spelling of every option of a click command (``--help`` included)."""
    names = {"--help"}
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def takes_value(command, name: str) -> bool:
    """True when option ``name`` of ``command`` is followed by a value."""
    for param in command.params:
        if name in getattr(param, "opts", ()) and getattr(param, "param_type_name", "") == "option":
            return not param.is_flag
    return False


def resolve(words: list[str]):
    """(command path, click command, remaining words) for ``ari ...`` words; AssertionError if unknown."""
    command, path, rest = CLI, [], list(words[1:])
    while rest and rest[0].startswith("-"):  # options of `ari` itself (-c ari.toml)
        word = rest.pop(0)
        name = word.split("=", 1)[0]
        assert name in option_names(command), f"`ari` has no option {name}"
        if "=" not in word and takes_value(command, name) and rest:
            rest.pop(0)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest[0]
        if name not in command.commands:
            where = " ".join(["ari", *path])
            raise AssertionError(f"`{where}` has no command {name!r} (it has: {', '.join(sorted(command.commands))})")
        command = command.commands[name]
        path.append(rest.pop(0))
    return path, command, rest


def unknown_options(command, rest: list[str]) -> list[str]:
    """Options in ``rest`` that ``command`` does not have (``[--json]`` and ``--a/--b`` spellings read too)."""
    known = option_names(command)
    bad = []
    for word in rest:
        word = word.strip("[]")
        for part in word.split("/") if word.startswith("-") else [word]:
            if re.fullmatch(r"--[\w-]+(=.*)?|-[A-Za-z]", part) and part.split("=", 1)[0] not in known:
                bad.append(part)
    return bad


@functools.lru_cache(maxsize=None)
def help_exit_code(path: tuple[str, ...]) -> int:
    """The exit code of `ari <path> --help`."""
    return CliRunner().invoke(app, [*path, "--help"]).exit_code


def check_command(words: list[str]) -> None:
    path, command, rest = resolve(words)
    if not path and len(words) > 1 and not rest:
        return  # options of `ari` itself only (`ari --version`): resolve checked each
    assert path, f"{' '.join(words)}: names no command"
    if hasattr(command, "commands"):
        assert not [w for w in rest if not w.startswith("-")], f"{' '.join(words)}: no such subcommand"
    assert help_exit_code(tuple(path)) == 0, f"`ari {' '.join(path)} --help` failed"
    assert not unknown_options(command, rest), \
        f"`ari {' '.join(path)}` has no option {', '.join(unknown_options(command, rest))}"


BLOCK_COMMANDS = quoted_commands(inline=False)
INLINE_COMMANDS = quoted_commands(inline=True)


# -- commands ----------------------------------------------------------------------------------

def test_the_docs_quote_commands_at_all():
    assert len(BLOCK_COMMANDS) >= 40, [w for w, _ in BLOCK_COMMANDS]
    assert {p.name for p in PAGES} >= {"operator-guide.md", "triage.md", "design.md", "README.md"}


@pytest.mark.parametrize("words", [w for _, w in BLOCK_COMMANDS], ids=[w for w, _ in BLOCK_COMMANDS])
def test_every_command_in_a_code_block_exists_with_its_options(words):
    check_command(words)


@pytest.mark.parametrize("words", [w for _, w in INLINE_COMMANDS], ids=[w for w, _ in INLINE_COMMANDS])
def test_every_inline_command_exists_with_its_options(words):
    check_command(words)


def test_a_misspelt_command_or_option_is_caught():
    with pytest.raises(AssertionError, match="no command 'chek'"):
        check_command(["ari", "nodes", "chek"])
    with pytest.raises(AssertionError, match="no option --versoin"):
        check_command(["ari", "--versoin"])
    with pytest.raises(AssertionError, match="no option --jsn"):
        check_command(["ari", "status", "--jsn"])


# -- triage.md -----------------------------------------------------------------------------------

def category_sections() -> dict[str, str]:
    """category -> body of its `### `category`` section in docs/triage.md."""
    found = {}
    for heading, body in sections(TRIAGE_DOC.read_text(encoding="utf-8")):
        m = re.fullmatch(r"`(\w+)`", heading)
        if m:
            found[m.group(1)] = body
    return found


def test_every_failure_category_has_its_section_in_triage_md_and_no_other():
    assert sorted(category_sections()) == sorted(triage.CATEGORIES)


@pytest.mark.parametrize("category", triage.CATEGORIES)
def test_a_category_section_lists_exactly_the_rules_of_that_category(category):
    rules = paragraph_after(category_sections()[category], "Rules:")
    assert rules is not None, f"docs/triage.md: section `{category}` has no 'Rules:' line"
    expected = {r.name for r in triage.RULES if r.category == category}
    assert names_in(rules) == expected, f"docs/triage.md `{category}`: {rules}"


def test_every_rule_is_named_once_in_triage_md():
    listed = []
    for _, body in sections(TRIAGE_DOC.read_text(encoding="utf-8")):
        rules = paragraph_after(body, "Rules:")
        if rules:
            listed += sorted(names_in(rules))
    assert sorted(listed) == sorted(r.name for r in triage.RULES)


@pytest.mark.parametrize("category", triage.CATEGORIES)
def test_a_category_section_says_what_the_retry_policy_does(category):
    text = paragraph_after(category_sections()[category], "Retry policy:")
    assert text is not None, f"docs/triage.md: section `{category}` has no 'Retry policy:' line"
    decision = retry_decision(category, tries=1, max_attempts=3, mem_gb=8.0, walltime_h=2.0, now=1000.0)
    said = [s for s in re.findall(r"\b(" + "|".join(STATES) + r")\b", text)]
    assert said and said[0] == decision.state, f"docs say {text!r}; the policy says {decision.state}"


# -- operator-guide.md ---------------------------------------------------------------------------

CAMPAIGN_KEYS = {f.name for f in dataclasses.fields(Campaign)}
NODE_KEYS = {f.name for f in dataclasses.fields(Node)}
SELECTION_KEYS = {f.name for f in dataclasses.fields(SelectionRules)}
ASSIGNMENT = re.compile(r"([a-z_][a-z0-9_]*) = (\S.*)")


def toml_for(key: str, assignment: str) -> str:
    """A small ari.toml holding ``assignment`` in the table its key belongs to."""
    if key in CAMPAIGN_KEYS and (key not in NODE_KEYS or key == "name"):
        return f"[campaign]\n{assignment}\n"
    if key in NODE_KEYS:
        base = [line for k, line in (("name", 'name = "n"'), ("host", 'host = "h"')) if k != key]
        return "[[node]]\n" + "\n".join([*base, assignment]) + "\n"
    return f"[selection]\n{assignment}\n"


def guide_assignments() -> list[tuple[str, str]]:
    spans = (" ".join(m.group(1).split()) for m in INLINE.finditer(prose(GUIDE.read_text(encoding="utf-8"))))
    return [(m.group(1), m.group(0)) for m in (ASSIGNMENT.fullmatch(s) for s in spans) if m]


def test_the_guide_shows_key_assignments_at_all():
    assert len(guide_assignments()) >= 3


@pytest.mark.parametrize("key,assignment", guide_assignments(), ids=[a for _, a in guide_assignments()])
def test_every_key_assignment_in_the_operator_guide_is_a_valid_config_key(key, assignment):
    assert key in CAMPAIGN_KEYS | NODE_KEYS | SELECTION_KEYS, f"{assignment}: no key {key!r} in config.py"
    parse_config(toml_for(key, assignment), Path("/campaign/ari.toml"))


def guide_toml_blocks() -> list[str]:
    return [body for lang, body in code_blocks(GUIDE.read_text(encoding="utf-8")) if lang == "toml"]


@pytest.mark.parametrize("text", guide_toml_blocks(), ids=[t.splitlines()[0] + f" #{i}" for i, t in enumerate(guide_toml_blocks())])
def test_every_toml_example_in_the_operator_guide_is_a_valid_ari_toml(text):
    parse_config(text, Path("/campaign/ari.toml"))


# -- what the console promises --------------------------------------------------------------------

PROMISES = DOCS / "promises.md"
CHECKED_BY = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def test_promises_md_is_indexed_and_names_its_tests():
    assert "(promises.md)" in (DOCS / "README.md").read_text(encoding="utf-8")
    assert len(CHECKED_BY.findall(PROMISES.read_text(encoding="utf-8"))) >= 20


@pytest.mark.parametrize("path, name", sorted(set(CHECKED_BY.findall(PROMISES.read_text(encoding="utf-8")))))
def test_every_test_a_promise_names_exists(path, name):
    source = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^def {name}\(", source, re.M), f"promises.md names {path}::{name}, which does not exist"
