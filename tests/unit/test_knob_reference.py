"""docs/knobs.md, the operator's knob reference, against the one declaration of each knob.

A host-wide knob is a field of `stages.settings.Platform` and a worker host's knob one of `WorkerHost`, each declared
once with its default, check and doc line (`knob(...)`); a service entry's key is a `ServiceEntry` field, its values in
group_data/all.py's `services`. The reference must name each of them, name nothing else, and show each declared
knob's default and doc line as declared.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import runpy
from pathlib import Path

import pytest

from stages import settings
from stages.settings import Platform, ServiceEntry, WorkerHost

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "knobs.md"
TABLE_ROW = re.compile(r"^\|(?P<first>[^|]*)\|(?P<rest>.*)\|\s*$")
NAME = re.compile(r"`([a-z][a-z0-9_]*)`")
# the layers of service entries, read by Platform.from_group_data beside the host-wide knobs
SERVICE_LAYERS = {"services", "service_overrides", "service_overrides_extra"}


def documented() -> dict[str, list[str]]:
    """knob name -> the row's other cells, for every table row of the reference whose first cell names knobs."""
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        m = TABLE_ROW.match(line)
        if not m or set(m["first"].strip()) <= {"-", " "}:
            continue
        for name in NAME.findall(m["first"]):
            assert name not in rows, f"docs/knobs.md documents {name!r} twice"
            rows[name] = [cell.strip() for cell in m["rest"].split("|")]
    return rows


def knobs() -> dict[str, dataclasses.Field]:
    """Every declared knob (host-wide and worker host) by its group_data name."""
    return {**settings._declared(Platform), **settings._declared(WorkerHost)}


def declared() -> set[str]:
    service_keys = {f.name for f in dataclasses.fields(ServiceEntry)} - {"vhost", "sources"}   # as from_entry's known
    return set(knobs()) | SERVICE_LAYERS | service_keys


def test_every_field_is_a_declared_knob_and_group_files_set_only_knobs():
    """Platform's fields are its services and its knobs; all.py holds the service entries and no knob's default
    (those live in the declaration); a group file sets only declared knobs and the service layers."""
    fields = {f.name for f in dataclasses.fields(Platform)} - {"services", "all_services"}
    assert fields == set(settings.KNOBS) and {f.name for f in dataclasses.fields(WorkerHost)} == \
        {name.removeprefix("worker_") for name in settings._declared(WorkerHost)}
    for f in knobs().values():
        assert callable(f.metadata["check"]) and f.metadata["doc"], f.name
    group = lambda name: {k for k in runpy.run_path(str(REPO / "group_data" / f"{name}.py"))   # noqa: E731
                          if not k.startswith("_") and k not in ("os", "sys", "Path")}
    assert group("all") == SERVICE_LAYERS
    for name in ("production", "sandbox", "brownfield", "workers"):
        assert group(name) <= set(knobs()) | SERVICE_LAYERS, name


def test_every_declared_knob_is_documented_and_no_documented_knob_is_missing():
    rows = documented()
    assert sorted(declared() - set(rows)) == [], "declared but not in docs/knobs.md"
    assert sorted(set(rows) - declared()) == [], "in docs/knobs.md but not declared"


def _default_cell(rows, name):
    cells = rows[name]
    m = re.fullmatch(r"`([^`]*)`", cells[0]) if len(cells) == 2 else None
    return ast.literal_eval(m[1]) if m else None


@pytest.mark.parametrize("name", sorted(knobs()))
def test_each_knobs_row_shows_its_declared_default_and_doc(name):
    rows = documented()
    f = knobs()[name]
    assert len(rows[name]) == 2, f"docs/knobs.md: {name}'s row is not | knob | default | what |"
    assert _default_cell(rows, name) == f.metadata["default"], "docs/knobs.md shows another default"
    assert rows[name][1] == f.metadata["doc"], "docs/knobs.md's line differs from the declaration's doc"


def test_the_checks_take_their_own_defaults():
    """Every declared default passes its own check (a default the deploy would refuse cannot be declared)."""
    for name, f in knobs().items():
        f.metadata["check"](name, f.metadata["default"])
