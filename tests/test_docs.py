"""The code blocks of the README and of the user guide work, and the repository's docs stand alone.

Pages whose code blocks are tested: README.md, the site's home page docs/index.md (the README
with site links) and every page of the user guide, docs/guide/*.md (the README's user-guide
material moved there). Rules (also stated in docs/guide/layout.md): every fenced ```python
block of a page is executed, in order, in one fresh Python process per page (a page's blocks
share one namespace, as a reader's session would, and each page stands alone). A block that
takes too long for the test suite (training, a benchmark) is skipped only when the line just
above its opening fence is the marker

    <!-- readme-test: skip (REASON) -->

and the test reports it as skipped with that reason (the block is then not run at all, so a
later block must not depend on it). Every ```bash block must pass ``bash -n``; in it, every
``mixupe`` command (also ``python -m mixupe`` and ``torchrun ... -m mixupe``) must name a
command whose ``--help`` works and, unless it holds a placeholder (``...`` or ``$VAR``), must
parse with the real argument parser; every ``make TARGET`` must name a target of the
Makefile. Bash blocks are never executed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mixupe.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = sorted((ROOT / "docs" / "guide").glob("*.md"))
PAGES = [README, ROOT / "docs" / "index.md", *GUIDE]
SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


def page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def readme_blocks(page: Path = README) -> list[tuple[str, int, str, str | None]]:
    """(language, first line number, code, skip reason or None) of every fenced block."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None or not opening["lang"]:
            i += 1
            continue
        marker = SKIP_MARKER.search(lines[i - 1]) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append((opening["lang"], i + 2, code, marker["reason"] if marker else None))
        i = end + 1
    return blocks


BLOCKS = {page_name(page): readme_blocks(page) for page in PAGES}
PYTHON = [(name, line, code, skip) for name, blocks in BLOCKS.items()
          for lang, line, code, skip in blocks if lang == "python"]
BASH = [(name, line, code) for name, blocks in BLOCKS.items()
        for lang, line, code, _ in blocks if lang == "bash"]


def test_readme_has_blocks_of_both_kinds():
    assert len(GUIDE) >= 5, "the user guide's pages are missing"
    assert len(PYTHON) >= 2 and len(BASH) >= 4
    readme = BLOCKS["README.md"]
    assert {"python", "bash"} <= {lang for lang, *_ in readme}, "README: the example, the commands"
    for name, blocks in BLOCKS.items():
        assert {lang for lang, *_ in blocks} <= {"python", "bash"}, f"{name}: another language"


PAGES_WITH_PYTHON = sorted({name for name, *_ in PYTHON})


@pytest.mark.parametrize("name", PAGES_WITH_PYTHON)
def test_readme_python_blocks_run_in_a_fresh_interpreter(name, tmp_path):
    # A fresh process, as a reader's: nothing imported by other tests can hide a missing import.
    runnable = [(line, code) for page, line, code, skip in PYTHON if page == name and not skip]
    if not runnable:
        pytest.skip(f"{name}: every python block is marked as too slow")
    script = "\n".join(
        f"exec(compile({code!r}, '{name}:{line}', 'exec'))" for line, code in runnable)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


MARKED_SLOW = [(name, line, skip) for name, line, _, skip in PYTHON if skip]
if MARKED_SLOW:  # reported one by one as skipped, with the marker's reason

    @pytest.mark.parametrize(("name", "line", "reason"), MARKED_SLOW)
    def test_readme_python_block_marked_as_too_slow(name, line, reason):
        pytest.skip(f"{name} line {line}: {reason}")


def command_lines(code: str) -> list[list[str]]:
    """The words of each command of a bash block (continued lines joined, comments cut)."""
    return [shlex.split(line, comments=True) for line in code.replace("\\\n", " ").splitlines()]


def mixupe_commands(code: str) -> list[list[str]]:
    """The argument lists given to ``mixupe`` in a bash block, one per command."""
    commands = []
    for words in command_lines(code):
        for k, word in enumerate(words):
            direct = Path(word).name == "mixupe" and (k == 0 or words[k - 1] != "-m")
            module = word == "-m" and k + 1 < len(words) and words[k + 1] == "mixupe"
            if direct or module:
                commands.append(words[k + (2 if module else 1) :])
                break
    return commands


def make_targets(code: str) -> list[str]:
    targets = []
    for words in command_lines(code):
        if words[:1] == ["make"]:
            targets += words[1:]
    return targets


def subcommand(argv: list[str]) -> list[str]:
    """The command words of ``argv``: ``train``, ``data describe`` and so on."""
    path = argv[:1]
    if argv[:1] == ["data"] and len(argv) > 1:
        path = argv[:2]
    return path


@pytest.mark.parametrize(("name", "line", "code"), BASH, ids=[f"{b[0]}:line{b[1]}" for b in BASH])
def test_readme_bash_block_parses_and_names_real_commands(name, line, code, capsys):
    where = f"{name} line {line}"
    done = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{where}: {done.stderr}"
    commands, targets = mixupe_commands(code), make_targets(code)
    assert commands or targets, f"{where}: no mixupe or make command"
    for argv in commands:
        assert argv, f"{where}: `mixupe` without a command"
        assert main([*subcommand(argv), "--help"]) == 0, f"{where}: {argv}"
        if "..." in argv or any("$" in word for word in argv):
            continue  # a placeholder: the command exists, its options are the reader's
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{where}: `mixupe {shlex.join(argv)}` does not parse "
                        f"(exit {exc.code}): {capsys.readouterr().err}")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make {target}"


def test_import_mixupe_loads_subpackages_on_first_use():
    code = ("import sys, mixupe\n"
            "assert 'mixupe.data' not in sys.modules and 'mixupe.engine' not in sys.modules\n"
            "ds = mixupe.data.load('digits', seed=0)\n"
            "assert ds.num_classes == 10 and 'mixupe.data' in sys.modules\n"
            "assert mixupe.models.names() and mixupe.engine.TrainConfig\n"
            "try:\n    mixupe.nope\nexcept AttributeError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "module 'mixupe' has no attribute 'nope'" in done.stdout


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    suffixes = {".md", ".py", ".toml", ".sh", ".txt", ".cfg", ".json", ".yml", ".yaml", ""}
    return [ROOT / name for name in listed
            if Path(name).suffix in suffixes and not name.startswith("results/")]


def test_no_tracked_file_points_outside_the_repository():
    # The notes the project was built from live outside the repository; a clone has only
    # its own docs, so nothing may cite the outside copies.
    outside = re.compile(r"\.\./" + "shared" + r"\b|/work/" + "shared" + r"\b")
    offenders = []
    for path in tracked_text_files():
        if path.is_file():
            for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if outside.search(text):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()}")
    assert not offenders, "\n".join(offenders)
    for doc in ("docs/METHOD.md", "docs/DATA.md", "docs/ARCHITECTURE.md"):
        assert (ROOT / doc).is_file(), doc


def test_docs_mentioned_in_readme_and_tests_exist():
    cited = set()
    docs = sorted(ROOT.glob("docs/**/*.md"))
    for path in [README, *sorted((ROOT / "tests").glob("*.py")), *docs]:
        cited |= set(re.findall(r"\bdocs/[A-Za-z0-9_./-]+\.md\b", path.read_text()))
    assert cited, "README and tests cite no docs"
    missing = sorted(doc for doc in cited if not (ROOT / doc).is_file())
    assert not missing, missing
