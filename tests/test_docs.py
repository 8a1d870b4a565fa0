"""The docs cannot drift from the code: every `anet-tf ...` command they show is one
the real argument parser accepts, every argument has help, the help says what the
docs say, and the configuration reference is what the schema generates."""

import argparse
import contextlib
import glob
import io
import os
import re
import runpy
import shlex

import pytest

from anet_tf.cli import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(
    [os.path.join(REPO, "README.md"), os.path.join(REPO, "anet_tf", "export", "serving", "README.md")]
    + glob.glob(os.path.join(REPO, "docs", "*.md"))
)
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "2>", "2>&1", "&"}


SHELL_BLOCKS = {"bash", "sh", "shell", "console"}


def _commands_in(text: str):
    """(line number, command, complete) of every `anet-tf` command in a Markdown
    text: the lines of fenced code blocks (continuation lines joined; complete
    commands in shell blocks) and inline code (a command's name and some of its
    flags, e.g. `anet-tf fit --resume`)."""
    lines = text.splitlines()
    in_block, shell = False, False
    joined, start = "", 0
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            shell = line.strip()[3:].strip() in SHELL_BLOCKS
            continue
        if in_block:
            if not joined:
                start = number
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            joined += line
            command = _command_of(joined)
            if command:
                yield start, command, shell
            joined = ""
        else:
            for match in re.finditer(r"`(anet-tf\s[^`]*)`", line):
                yield number, match.group(1).replace("\\|", "|"), False


# What may stand before `anet-tf` on a shell line (besides VAR=value assignments).
PREFIXES = {"&&", "||", ";", "|", "(", "$(", "time", "nice", "-v", "/usr/bin/time"}


def _command_of(line: str) -> str | None:
    """The `anet-tf ...` command a shell line runs, or None (`cd anet-tf` is not
    one)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: split on spaces
        words = line.split()
    for i, word in enumerate(words):
        if word != "anet-tf":
            continue
        before = words[:i]
        if not before or before[-1] in PREFIXES:
            return shlex.join(words[i:])
        if re.fullmatch(r"[A-Za-z_]\w*=.*", before[-1], re.S):
            return shlex.join(words[i:])
    return None


def doc_commands():
    found = []
    for path in DOCS:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        name = os.path.relpath(path, REPO)
        found += [
            pytest.param(cmd, full, id=f"{name}:{n}")
            for n, cmd, full in _commands_in(text)
        ]
    return found


def _tokens(command: str) -> list[str]:
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: split on spaces
        tokens = command.split()
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS or token.startswith((">", "2>")):
            return tokens[:i]
    return tokens


def _is_notation(token: str) -> bool:
    """A usage-notation token (`[--x]`, `a|b`, `...`, `FILE`, `<run>`) rather than
    a value a user would type."""
    return (
        any(c in token for c in "[]|<>")
        or token.endswith("...")
        or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[a-z0-9.]+)?", token))
    )


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _check_flags(tokens: list[str]) -> str | None:
    """For a synopsis: the command path exists and every flag belongs to it."""
    parser, rest = build_parser(), tokens[1:]
    while rest and _subparsers(parser):
        if not re.fullmatch(r"[\[(]?[a-z][a-z_|-]*[\])]?", rest[0]):
            break  # a placeholder or a drawing, not a command name
        names = rest[0].strip("[]()").split("|")
        choices = _subparsers(parser)
        unknown = [n for n in names if n not in choices]
        if unknown:
            return f"unknown command {unknown} (choices: {sorted(choices)})"
        parser, rest = choices[names[0]], rest[1:]
    flags = {s for a in parser._actions for s in a.option_strings}
    for token in rest:
        for part in re.split(r"[\[\]|()]", token):
            flag = part.split("=")[0]
            if re.fullmatch(r"--?[a-zA-Z][\w-]*", flag) and flag not in flags:
                return f"unknown flag {flag} (known: {sorted(flags)})"
    return None


@pytest.mark.parametrize("command, complete", doc_commands())
def test_every_documented_command_parses(command, complete):
    """A command of a shell block parses as it stands; a synopsis or a command
    named in the text names a command that exists and flags it has. (A line of
    output, `anet-tf search: error: ...`, is not a command.)"""
    tokens = _tokens(command)
    assert tokens and tokens[0] == "anet-tf", command
    if len(tokens) > 1 and tokens[1].endswith(":"):
        return
    if not complete or any(_is_notation(t) for t in tokens[1:]):
        problem = _check_flags(tokens)
        assert problem is None, f"{command}: {problem}"
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(tokens[1:])
    except SystemExit as exc:
        assert exc.code == 0, f"{command}: {err.getvalue().strip()}"
        return
    assert args.command is not None


def test_the_command_finder_sees_blocks_inline_code_and_continuations():
    text = (
        "Run `anet-tf summary --config veri776` first.\n"
        "```bash\n"
        "KERAS_BACKEND=jax anet-tf fit \\\n"
        "    --set train.seed=1   # a comment\n"
        "echo no\n"
        "```\n"
    )
    assert [(c, full) for _, c, full in _commands_in(text)] == [
        ("anet-tf summary --config veri776", False),
        ("anet-tf fit --set train.seed=1", True),
    ]
    assert _command_of("git clone URL anet-tf && cd anet-tf") is None
    assert _command_of('pip install -e ".[cpu]" && anet-tf fit') == "anet-tf fit"
    assert _command_of("TF_CONFIG='{\"a\": 1}' anet-tf fit --set 'x=[1, 2]'") == (
        "anet-tf fit --set 'x=[1, 2]'"
    )
    assert _check_flags(["anet-tf", "fit", "--no-such-flag"]).startswith("unknown flag")
    assert _check_flags(["anet-tf", "visualize", "ranked|nope"]).startswith(
        "unknown command"
    )
    assert (
        _check_flags(["anet-tf", "evaluate", "(--run", "RUN", "|", "--model", "M)"])
        is None
    )


def _walk(parser, path):
    yield path, parser
    for name, sub in _subparsers(parser).items():
        yield from _walk(sub, [*path, name])


def test_every_argument_has_help():
    missing = []
    for path, parser in _walk(build_parser(), ["anet-tf"]):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(
                    f"{' '.join(path)} {action.option_strings or action.dest}"
                )
    assert not missing


def _help(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(out.getvalue().split())


def test_help_says_what_the_docs_say():
    from anet_tf.model.weights import TORCH_ARCHS

    convert = _help("weights", "convert")
    assert "FastReID" in convert and "IBN-Net" in convert and "heads.npz" in convert
    assert all(arch in convert for arch in TORCH_ARCHS)
    with open(os.path.join(REPO, "anet_tf", "export", "serving", "README.md"), encoding="utf-8") as fh:
        served = re.search(r"\| (JPEG, PNG, GIF, BMP or WebP) files", fh.read()).group(
            1
        )
    assert served in _help("client")


def test_configuration_reference_is_generated_from_the_schema():
    tool = runpy.run_path(os.path.join(REPO, "tools", "config_reference.py"))
    with open(tool["OUTPUT"], encoding="utf-8") as fh:
        current = fh.read()
    assert current == tool["render"](), (
        "docs/configuration.md is out of date: run python tools/config_reference.py"
    )
    from anet_tf.config import Config

    for section in ("data", "model", "loss", "train", "eval", "export"):
        for key in getattr(Config(), section).__dataclass_fields__:
            assert f"`{section}.{key}`" in current


# ------------------------------------------------------------- links and anchors
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _markdown_files():
    files = [os.path.join(REPO, "README.md"), os.path.join(REPO, "CHANGELOG.md"),
             os.path.join(REPO, "anet_tf", "export", "serving", "README.md")]
    docs = os.path.join(REPO, "docs")
    for dirpath, _, names in os.walk(docs):
        files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".md")]
    return files


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and _),
    spaces to -."""
    text = re.sub(r"`|\*\*|\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.lstrip().startswith("```"):
                in_code = not in_code
            match = None if in_code else HEADING.match(line)
            if match:
                slug = _slug(match.group(1))
                n = seen.get(slug, 0)
                seen[slug] = n + 1
                out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _broken_links(paths) -> list[str]:
    broken = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # links in code are code
        for match in LINK.finditer(text):
            target = match.group(1) or match.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (
                os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                if file_part
                else path
            )
            where = os.path.relpath(path, REPO)
            if not os.path.exists(resolved):
                broken.append(f"{where}: {target} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
                broken.append(f"{where}: {target} (no such heading)")
    return broken


def test_every_relative_link_and_anchor_resolves():
    broken = _broken_links(_markdown_files())
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A `page` (draft)\n\n[ok](#a-page-draft) [gone](other.md) [no](#nothing)\n"
        "```\n[in code](ignored.md)\n```\n",
        encoding="utf-8",
    )
    found = _broken_links([str(page)])
    assert len(found) == 2
    assert found[0].endswith("other.md (no such file)")
    assert found[1].endswith("#nothing (no such heading)")


def test_every_benchmark_script_is_listed_in_contributing():
    with open(os.path.join(REPO, "docs", "contributing.md"), encoding="utf-8") as fh:
        listed = set(re.findall(r"`([a-z0-9_]+\.py)`", fh.read()))
    scripts = {
        n for n in os.listdir(os.path.join(REPO, "benchmarks")) if n.endswith(".py")
    }
    missing = sorted(scripts - listed)
    assert not missing, f"benchmarks not in docs/contributing.md: {missing}"
