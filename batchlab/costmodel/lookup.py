"""Finding a named preset: one rule for GPUs, models, runtime profiles and deployments.

A name matches whatever its case, surrounding spaces, and `_` or a space in place of `-`
("H100_SXM", "cuda graph"); a table may add aliases. A preset object passes through as it
is; anything else, or a name no table holds, is a ConfigError that lists the choices.
"""

from __future__ import annotations

from batchlab.core import ConfigError


def preset_key(name: str) -> str:
    """The spelling a preset table is keyed by."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def find_preset(kind: str, name, table: dict, cls: type, aliases: dict | None = None,
                hint: str = ""):
    """`table`'s preset called `name` (or `name` itself when it is a `cls`); `kind` names
    the thing in the error ("GPU preset"), `hint` ends it ("(or load your own ...)")."""
    if isinstance(name, cls):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"{kind} must be a preset name or a {cls.__name__}, not {name!r}")
    key = preset_key(name)
    key = (aliases or {}).get(key, key)
    if key not in table:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}"
                          + (f" {hint}" if hint else ""))
    return table[key]
