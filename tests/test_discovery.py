"""Policy discovery through entry points: built-ins, third-party plugins, broken plugins."""

from __future__ import annotations

import textwrap

import pytest

import batchlab
from batchlab import ConfigError
from batchlab.core.errors import PluginError
from batchlab.policies.discovery import available_policies, load_policy

PLUGIN = '''
import attrs
from batchlab.core import Plan

@attrs.define
class Lazy:
    """Never schedules anything (for discovery tests)."""
    patience: float = 1.0
    def add(self, request, now): pass
    def schedule(self, now, devices): return Plan()
    def update(self, batch, result, now): pass
    def abort(self, request_id): pass

class NoUpdate:
    def add(self, request, now): pass
    def schedule(self, now, devices): return Plan()
    def abort(self, request_id): pass
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Install a fake distribution with three entry points on sys.path."""
    (tmp_path / "fakeplug.py").write_text(PLUGIN)
    info = tmp_path / "fakeplug-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [batchlab.policies]
        lazy = fakeplug:Lazy
        no-update = fakeplug:NoUpdate
        missing = fakeplug_does_not_exist:Thing
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_fixed_window_is_found_through_entry_points():
    info = {i.name: i for i in available_policies()}["fixed-window"]
    assert info.error is None
    assert "batchlab" in info.source and "fixed_window:FixedWindow" in info.source
    assert [p.name for p in info.params] == ["max_batch", "window", "block_size"]
    policy = load_policy("fixed-window", max_batch="4", window="0.5")
    assert (policy.max_batch, policy.window) == (4, 0.5)


def test_third_party_plugins_load_and_broken_ones_are_reported(plugins):
    infos = {i.name: i for i in available_policies()}
    assert infos["lazy"].error is None and infos["lazy"].source.startswith("fakeplug 0.3")
    assert "missing update" in infos["no-update"].error
    assert "failed to import" in infos["missing"].error
    assert load_policy("lazy", patience=2.0).patience == 2.0
    assert infos["fixed-window"].error is None          # the others still load
    with pytest.raises(PluginError, match="'missing' from fakeplug 0.3.*failed to import"):
        load_policy("missing")
    with pytest.raises(PluginError, match="no-update.*Scheduler protocol"):
        load_policy("no-update")


def test_environment_variable_restricts_plugins(plugins, monkeypatch):
    monkeypatch.setenv("BATCHLAB_POLICIES", "lazy")
    assert [i.name for i in available_policies()] == ["lazy"]
    with pytest.raises(ConfigError, match="unknown policy 'fixed-window'.*BATCHLAB_POLICIES"):
        load_policy("fixed-window")


@pytest.mark.parametrize("params,message", [
    ({"nope": 1}, "has no parameter 'nope'; parameters: max_batch, window, block_size"),
    ({"window": "soon"}, "parameter 'window' must be a finite float, got 'soon'"),
    ({"max_batch": 2.5}, "parameter 'max_batch' must be int, got 2.5"),
    ({"max_batch": 0}, "max_batch must be > 0"),
    ({"window": -1.0}, "window must be a duration from 0 to 1e+09 seconds"),
    ({"window": "nan"}, "parameter 'window' must be a finite float"),
])
def test_bad_parameters_name_the_policy_and_parameter(params, message):
    with pytest.raises(ConfigError, match="policy 'fixed-window'") as info:
        load_policy("fixed-window", **params)
    assert message in str(info.value)


def test_unknown_policy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown policy 'nope'; available: .*fixed-window"):
        batchlab.load_policy("nope")
