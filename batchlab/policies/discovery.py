"""Finding and loading policies through the `batchlab.policies` entry-point group.

Built-in policies are declared in batchlab's own pyproject exactly as a third-party package
declares its plugins, and come through this same code: there is no private registry.

`BATCHLAB_POLICIES` (comma-separated names), when set, restricts which entry points load,
so a broken or unwanted plugin can be switched off without uninstalling it.
"""

from __future__ import annotations

import inspect
import math
import os
import typing
from importlib.metadata import entry_points

import attrs

from ..core.errors import ConfigError, PluginError
from ..core.protocols import Scheduler

GROUP = "batchlab.policies"
ENV_FILTER = "BATCHLAB_POLICIES"


@attrs.frozen
class Param:
    name: str
    type: str
    default: object


@attrs.frozen
class PolicyInfo:
    """One entry point: its name, where it comes from, and either its class or its error."""

    name: str
    source: str                 # "distribution version (module:attr)"
    description: str = ""
    params: tuple = ()
    factory: object = None
    error: str | None = None    # why it could not be loaded, if it could not


def _selected(name: str) -> bool:
    wanted = os.environ.get(ENV_FILTER, "").strip()
    return not wanted or name in {w.strip() for w in wanted.split(",")}


def _dist_name(ep) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist else None


def _entry_points() -> list[list]:
    """The entry points of each policy name, sorted by name: one each, or every different
    declaration of a name that two distributions (or two targets) claim."""
    seen: dict[str, list] = {}
    for ep in entry_points(group=GROUP):
        same = seen.setdefault(ep.name, [])
        # The same distribution can be visible twice (an editable install plus a build dir).
        if not any(o.value == ep.value and _dist_name(o) == _dist_name(ep) for o in same):
            same.append(ep)
    return [seen[name] for name in sorted(seen)]


def _source(ep) -> str:
    dist = getattr(ep, "dist", None)
    return (f"{dist.name} {dist.version}" if dist else "unknown distribution") + f" ({ep.value})"


def _claimed(eps) -> PolicyInfo:
    """A name several entry points declare: none of them is chosen behind the user's back (a
    plugin could otherwise replace a built-in policy, or which one runs would depend on the
    order of sys.path)."""
    return PolicyInfo(eps[0].name, " and ".join(_source(ep) for ep in eps),
                      error="is declared more than once: uninstall all but one, or rename "
                            "the plugin's entry point")


def _params(factory) -> tuple[Param, ...]:
    if attrs.has(factory):
        hints = typing.get_type_hints(factory)
        return tuple(
            Param(f.name, _type_name(hints.get(f.name, f.type)),
                  f.default.factory() if isinstance(f.default, attrs.Factory) else f.default)
            for f in attrs.fields(factory) if f.init)
    sig = inspect.signature(factory)
    return tuple(
        Param(p.name, _type_name(p.annotation),
              None if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _type_name(annotation) -> str:
    if annotation in (None, inspect.Parameter.empty):
        return "any"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _describe(ep) -> PolicyInfo:
    source = _source(ep)
    try:
        factory = ep.load()
    except Exception as exc:  # a broken plugin must not take the others down
        return PolicyInfo(ep.name, source, error=f"failed to import: {type(exc).__name__}: {exc}")
    missing = [m for m in ("add", "schedule", "update", "abort")
               if not callable(getattr(factory, m, None))]
    if missing:
        return PolicyInfo(ep.name, source, error="does not implement the Scheduler protocol "
                          f"(missing {', '.join(missing)})")
    doc = inspect.getdoc(factory) or ""
    try:
        params = _params(factory)
    except Exception as exc:
        return PolicyInfo(ep.name, source, error=f"cannot read its parameters: {exc}")
    return PolicyInfo(ep.name, source, doc.split("\n\n")[0].replace("\n", " "), params, factory)


def policy_names() -> list[str]:
    """The name of every policy entry point, loadable or not, BATCHLAB_POLICIES aside: what
    a name in a config file may be (one outside it is a typo, not a policy switched off)."""
    return [eps[0].name for eps in _entry_points()]


def available_policies(include_broken: bool = True) -> list[PolicyInfo]:
    """Every policy entry point (filtered by BATCHLAB_POLICIES), loaded or with its error."""
    infos = [_describe(eps[0]) if len(eps) == 1 else _claimed(eps)
             for eps in _entry_points() if _selected(eps[0].name)]
    return infos if include_broken else [i for i in infos if i.error is None]


def _coerce(policy: str, param: Param, value):
    """Accept strings from the command line for int, float and bool parameters."""
    kind = param.type
    if not isinstance(value, str) or kind in ("str", "any"):
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            number = float(value)
            if not math.isfinite(number):   # window=inf would run but never start a step
                raise ValueError
            return number
        if kind == "bool":
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
    except ValueError:
        what = "a finite float" if kind == "float" else kind
        raise ConfigError(f"policy {policy!r}: parameter {param.name!r} must be {what}, "
                          f"got {value!r}"[:300]) from None
    return value


def load_policy(name: str, /, **params) -> Scheduler:
    """Instantiate the policy registered under `name` with `params`, validated.

    `name` is positional-only, so that a policy may have a parameter called `name` too."""
    if not isinstance(name, str):
        raise ConfigError(f"a policy name must be a string, got {name!r}"[:200])
    infos = {i.name: i for i in available_policies()}
    info = infos.get(name)
    if info is None:
        known = ", ".join(sorted(infos)) or "none"
        hint = f" ({ENV_FILTER} is set)" if os.environ.get(ENV_FILTER) else ""
        raise ConfigError(f"unknown policy {name!r}; available: {known}{hint}")
    if info.error:
        raise PluginError(f"policy {name!r} from {info.source} {info.error}")
    declared = {p.name: p for p in info.params}
    for key in params:
        if key not in declared:
            valid = ", ".join(declared) or "none"
            raise ConfigError(f"policy {name!r} has no parameter {key!r}; parameters: {valid}")
    kwargs = {k: _coerce(name, declared[k], v) for k, v in params.items()}
    for key, value in kwargs.items():
        kind = declared[key].type
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v),
              "bool": lambda v: isinstance(v, bool)}.get(kind, lambda v: True)
        if not ok(value):
            raise ConfigError(f"policy {name!r}: parameter {key!r} must be "
                              f"{'a finite float' if kind == 'float' else kind}, "
                              f"got {value!r}"[:300])
    try:
        policy = info.factory(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"policy {name!r}: {exc}") from None
    except Exception as exc:   # a plugin's own bug while constructing: name the plugin
        raise PluginError(f"policy {name!r} from {info.source} failed to construct: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(policy, Scheduler):
        raise PluginError(f"policy {name!r} from {info.source} built a "
                          f"{type(policy).__name__} that is not a Scheduler")
    return policy
