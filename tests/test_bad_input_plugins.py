"""Plugins that go wrong: a policy whose module is missing or raises on import, one that
raises in its constructor or calls sys.exit in update, and one with a `name` parameter. Each
failure is one line naming the policy, its distribution and entry point; the others still load.
"""

from __future__ import annotations

import textwrap

import pytest

from batchlab import load_policy
from batchlab.cli import main
from batchlab.core.errors import PluginError
from conftest import one_line


BROKEN_PLUGINS = '''
raise RuntimeError("this plugin needs a GPU driver")
'''
ODD_PLUGINS = '''
import sys


class Base:
    def __init__(self, name: str = "odd"):
        self.name = name
        self.inner = None

    def add(self, request, now):
        self._inner().add(request, now)

    def schedule(self, now, devices):
        return self._inner().schedule(now, devices)

    def update(self, batch, result, now):
        self._inner().update(batch, result, now)

    def abort(self, request_id):
        self._inner().abort(request_id)

    def _inner(self):
        if self.inner is None:
            from batchlab import load_policy
            self.inner = load_policy("fixed-window")
        return self.inner


class Named(Base):
    """Has a parameter called name."""


class Exploding(Base):
    def __init__(self):
        raise RuntimeError("no licence server")


class Quitter(Base):
    def update(self, batch, result, now):
        sys.exit(0)
'''


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A distribution with a policy whose module does not exist and one whose module raises
    while it is imported."""
    (tmp_path / "brokenplug.py").write_text(BROKEN_PLUGINS)
    info = tmp_path / "brokenplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (tmp_path / "oddplug.py").write_text(ODD_PLUGINS)
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [batchlab.policies]
        ghost = brokenplug_missing_module:Policy
        grumpy = brokenplug:Policy
        named = oddplug:Named
        exploding = oddplug:Exploding
        quitter = oddplug:Quitter
    """))
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("name,words", [
    ("ghost", "policy 'ghost' from brokenplug 1.0 (brokenplug_missing_module:Policy) failed "
              "to import: ModuleNotFoundError"),
    ("grumpy", "policy 'grumpy' from brokenplug 1.0 (brokenplug:Policy) failed to import: "
               "RuntimeError: this plugin needs a GPU driver"),
], ids=["missing-module", "raises-on-import"])
def test_a_plugin_that_fails_to_import_is_named(name, words, broken_plugins, capsys):
    with pytest.raises(PluginError) as info:
        load_policy(name)
    assert words in one_line(info.value)
    assert main(["run", "--policy", name, "--requests", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    # The others still load.
    assert load_policy("fixed-window").name == "fixed-window"


def test_a_plugin_with_a_name_parameter_loads_through_every_path(broken_plugins, capsys):
    assert load_policy("named", name="mine").name == "mine"
    assert main(["run", "--policy", "named", "--set", "name=mine", "--requests", "3"]) == 0


@pytest.mark.parametrize("argv,words", [
    (["run", "--policy", "exploding"], "policy 'exploding' from brokenplug 1.0 "
     "(oddplug:Exploding) failed to construct: RuntimeError: no licence server"),
    (["run", "--policy", "quitter", "--requests", "3"],
     "policy 'odd' broke rule 'raised': update() raised SystemExit: 0"),
], ids=["init-raises", "sys-exit-in-update"])
def test_a_plugin_that_misbehaves_is_named_and_the_run_fails(argv, words, broken_plugins,
                                                            capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
