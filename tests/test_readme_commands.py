"""Every command README.md shows runs (fast variants: a handful of requests, outputs into a
temporary folder), so the README cannot drift from the code again; and its test command is
exactly what CI runs."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import textwrap
import tomllib
from pathlib import Path

import pytest

from batchlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

TINY_COMPARE = textwrap.dedent("""
    [run]
    prompt = "lognormal:128:1.0"
    output = "lognormal:16:1.0"
    [traffic]
    local_requests = 3
    rates = [4]
    duration = 2
    min_requests = 8
    [[models]]
    key = "dense"
    kind = "dense"
    label = "Llama-3-8B on 1 x H100"
    model = "llama-3-8b"
    gpu = "h100"
""")
TINY_SWEEP = '[base]\nrequests = 10\n[grid]\npolicy = ["continuous", "fixed-window"]\n'
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
    f"2023-11-16 18:15:46.{i:06d},{100 + 7 * i},{5 + i % 9}\n" for i in range(40))


def readme_commands() -> list[str]:
    """The `batchlab ...` lines of the indented block under "## The command line", with
    continuation lines joined and comments dropped."""
    section = README.split("## The command line", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n((?:    .*\n|\n)+)", section).group(1)
    text = re.sub(r"\\\n\s*", " ", textwrap.dedent(block))
    lines = [line.split("  #", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line.startswith("batchlab ")]


def fast_variant(argv: list[str]) -> list[str]:
    """The same command, made quick: few requests, no plots, local processes."""
    argv = list(argv)

    def setting(flag, value):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv.extend([flag, value])

    if argv[0] == "run":
        if "--trace" in argv:
            setting("--limit", "20")
        else:
            setting("--requests", "20")
    elif argv[0] == "compare" and "--config" in argv:
        argv.append("--no-plots")
    elif argv[0] == "sweep":
        argv[1] = "tiny-sweep.toml"  # the example's grid has 200-request points
        setting("--executor", "local")
        setting("--processes", "1")
    return argv


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert len(commands) >= 8 and commands[0] == "batchlab --version"
    assert any("\\" not in c and "--devices 2 --json" in c for c in commands)  # joined


def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "AzureLLMInferenceTrace_conv.csv").write_text(AZURE)
    (tmp_path / "tiny-sweep.toml").write_text(TINY_SWEEP)
    for command in readme_commands():
        line, _, redirect = command.partition(">")
        argv = fast_variant(shlex.split(line)[1:])
        if argv == ["--version"]:
            with pytest.raises(SystemExit) as done:
                main(argv)
            assert done.value.code == 0 and "batchlab" in capsys.readouterr().out
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{command!r} -> exit {code}: {err}"
        if redirect:
            target = tmp_path / redirect.strip()
            target.write_text(out.getvalue())
            assert tomllib.loads(target.read_text())["models"]  # a config one can edit
            target.write_text(TINY_COMPARE)  # the fast variant of the edited scenario
    assert (tmp_path / "records.csv").read_text().count("\n") == 21
    assert (tmp_path / "my-compare" / "README.txt").exists()
    assert (tmp_path / "tiny-sweep-results" / "results.csv").exists()


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"pip install -q (-e '\.\[[^\]]*\]')", ci).group(1)
    test = ci.strip().splitlines()[-1].strip()
    shown = f"pip install {install} && {test}"
    assert shown in README, (shown, "README's test command differs from .ci/run")
