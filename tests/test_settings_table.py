"""The README's settings tables against the settings table the code reads
(core/src/settings.cpp): every variable documented with its default, and
nothing documented that the table lacks."""

from __future__ import annotations

import re
from pathlib import Path

from gunicorn_prometheus_exporter import _native

README = Path(__file__).resolve().parent.parent / "README.md"
_HEADERS = ("| setting | default | meaning |", "| variable | default | meaning |")


def _documented() -> dict[str, list[str]]:
    """Each variable of the README's settings tables: the defaults its row shows."""
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in README.read_text().splitlines():
        if line in _HEADERS:
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if not in_table or line.startswith("| ---"):
            continue
        names_cell, default_cell = line.split("|")[1:3]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", names_cell)
        defaults = re.findall(r"`([^`]*)`", default_cell)
        for i, name in enumerate(names):
            rows[name] = defaults[i : i + 1] if len(defaults) == len(names) else defaults[:1]
    return rows


def _variables() -> dict[str, str]:
    return {s["variable"]: s["default"] for s in _native.settings() if s["variable"]}


def test_the_readme_tables_are_found() -> None:
    assert len(_documented()) > 30


def test_every_variable_is_documented_with_its_default() -> None:
    documented = _documented()
    for name, default in _variables().items():
        assert name in documented, f"{name} is not in the README's settings tables"
        assert documented[name] == ([default] if default else []), (name, documented[name], default)


def test_nothing_documented_that_the_table_lacks() -> None:
    unknown = sorted(set(_documented()) - set(_variables()))
    assert not unknown, unknown


def test_every_setting_has_help_and_a_known_kind() -> None:
    for s in _native.settings():
        assert s["variable"] or s["flag"], s
        assert s["help"], s
        assert s["kind"] in ("text", "bool", "integer", "seconds"), s
