"""The documentation stays true to the code and whole: the MkDocs site builds strictly
(a broken link or anchor fails it), the generated references match the code
(docs/generate.py --check), the README is short and its links resolve, the man pages
render, and every setting of every program is documented."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MKDOCS = ROOT / "mkdocs.yml"
GENERATE = DOCS / "generate.py"
MKDOCS_BIN = Path(sys.executable).parent / "mkdocs"
README_MAX_LINES = 200


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", GENERATE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = [str(MKDOCS_BIN) if MKDOCS_BIN.exists() else "mkdocs"]
    return subprocess.run([*command, "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = mkdocs_build(MKDOCS, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "settings.html").exists()


@pytest.mark.parametrize("broken", ["[gone](no-such-page.md)",
                                    "[gone](reference/settings.md#no-such-anchor)"])
def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path, broken: str) -> None:
    """The validation settings of mkdocs.yml are what makes the build above meaningful."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    index = docs / "index.md"
    index.write_text(index.read_text() + f"\n{broken}\n")
    config = yaml.safe_load(MKDOCS.read_text())
    config["docs_dir"] = str(docs)
    copy = tmp_path / "mkdocs.yml"
    copy.write_text(yaml.safe_dump(config))
    result = mkdocs_build(copy, tmp_path / "site")
    assert result.returncode != 0, result.stderr[-2000:]


def test_the_generated_references_match_the_code() -> None:
    result = subprocess.run([sys.executable, str(GENERATE), "--check"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, (
        result.stderr + "\nrun: .venv/bin/python docs/generate.py, and commit the result")


def test_the_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_relative_link_of_the_readme_resolves() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [link for link in links if not re.match(r"[a-z]+:", link)
                and not link.startswith("#")]
    assert relative, "the README links into docs/"
    missing = [link for link in relative
               if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, missing


def long_options(parser) -> set[str]:  # type: ignore[no-untyped-def]
    return {flag for action in parser._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"}


def test_every_setting_is_in_the_settings_reference() -> None:
    gen = generator()
    settings = (DOCS / "reference" / "settings.md").read_text()
    cli = (DOCS / "reference" / "cli.md").read_text()
    for program in gen.PROGRAMS:
        parser, _ = gen.parser_of(program)
        section = settings.split(f"## {program.name}\n", 1)
        assert len(section) == 2, f"settings.md has no section for {program.name}"
        table = section[1].split("\n## ", 1)[0]
        for flag in long_options(parser):
            assert f"`{flag}" in table or f", {flag}" in table, (program.name, flag)
        for name, _, sub in gen.subcommands(parser):
            assert f"### {program.name} {name}\n" in cli, (program.name, name)
            for flag in long_options(sub):
                assert flag in cli, (program.name, name, flag)


@pytest.fixture(scope="module")
def man_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    result = subprocess.run([sys.executable, str(GENERATE), "--man-only", "--man", str(out)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return out


def test_every_man_page_has_its_sections_and_options(man_pages: Path) -> None:
    gen = generator()
    for program in gen.PROGRAMS:
        page = (man_pages / f"{program.name}.1").read_text()
        assert page.startswith(f'.TH "{program.name.upper()}" "1" ')
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "FILES",
                        '"EXIT STATUS"', '"SEE ALSO"'):
            assert f"\n.SH {section}\n" in page, (program.name, section)
        parser, _ = gen.parser_of(program)
        flags = set(long_options(parser))
        subs = gen.subcommands(parser)
        if subs:
            assert "\n.SH COMMANDS\n" in page, program.name
        for _, _, sub in subs:
            flags |= long_options(sub)
        for flag in flags:
            assert flag.replace("-", "\\-") in page, (program.name, flag)
        # No text line may start with a dot or a quote that roff would take as a request.
        for line in page.splitlines():
            if line.startswith(("'", ".")):
                assert re.match(r"\.(TH|SH|SS|TP|PP|RS|RE|nf|fi|ad|nh)\b", line), line


@pytest.mark.skipif(shutil.which("groff") is None and shutil.which("man") is None,
                    reason="needs groff or man to render")
def test_every_man_page_renders(man_pages: Path) -> None:
    gen = generator()
    for program in gen.PROGRAMS:
        page = man_pages / f"{program.name}.1"
        if shutil.which("groff"):
            command = ["groff", "-man", "-Tutf8", "-ww", str(page)]
        else:
            command = ["man", "--warnings", "-l", str(page)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert not result.stderr.strip(), (program.name, result.stderr[-2000:])
        assert program.name in result.stdout
