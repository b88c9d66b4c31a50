"""docs/knobs.md, the operator's knob reference, against the knobs the deploy declares.

A knob is declared in stages/settings.py (a host-wide knob: its check in `_KNOBS` and its `Platform` field; a
service entry's key: a `Service` field) or read by `stages.workers.WorkerHost` (a worker host's knob), with its
default in group_data. The reference must name each of them, name nothing else, and show group_data's default.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import runpy
from pathlib import Path

import pytest

from stages import settings
from stages.settings import Platform, Service, read_group_data

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


def worker_knobs() -> set[str]:
    """The knobs WorkerHost.from_group_data reads (`get("worker_...")`)."""
    from stages.workers import WorkerHost   # imports pyinfra's deploy API: only where needed

    return set(re.findall(r'get\("(worker_[a-z_]+)"\)', inspect.getsource(WorkerHost.from_group_data)))


def declared() -> set[str]:
    service_keys = {f.name for f in dataclasses.fields(Service)} - {"vhost", "sources"}   # as from_entry's known
    return set(settings._KNOBS) | SERVICE_LAYERS | service_keys | worker_knobs()


def test_the_declarations_agree_with_each_other_and_group_data():
    """Each host-wide knob has both its check and its Platform field, and its default in group_data/all.py;
    each worker host knob its default in group_data/workers.py."""
    fields = {f.name for f in dataclasses.fields(Platform)} - {"services", "all_services"}
    assert fields == set(settings._KNOBS)
    all_py = set(read_group_data())
    assert set(settings._KNOBS) | SERVICE_LAYERS == all_py
    workers_py = {k for k in runpy.run_path(str(REPO / "group_data" / "workers.py")) if not k.startswith("_")}
    assert worker_knobs() == workers_py


def test_every_declared_knob_is_documented_and_no_documented_knob_is_missing():
    rows = documented()
    assert sorted(declared() - set(rows)) == [], "declared but not in docs/knobs.md"
    assert sorted(set(rows) - declared()) == [], "in docs/knobs.md but not declared"


def _default_cell(rows, name):
    cells = rows[name]
    m = re.fullmatch(r"`([^`]*)`", cells[0]) if len(cells) == 2 else None
    return ast.literal_eval(m[1]) if m else None


@pytest.mark.parametrize("group", ["all", "workers"])
def test_the_defaults_shown_are_group_datas(group):
    rows = documented()
    values = read_group_data() if group == "all" else read_group_data("workers")
    names = set(settings._KNOBS) | SERVICE_LAYERS if group == "all" else worker_knobs()
    shown = {name: _default_cell(rows, name) for name in names if name in rows}
    checked = {name: value for name, value in shown.items() if value is not None}
    assert len(checked) >= len(names) - 2   # every knob but `services` shows its default
    wrong = {name: (value, values[name]) for name, value in checked.items() if value != values[name]}
    assert wrong == {}, "docs/knobs.md shows a default that is not group_data's (name: (shown, group_data))"
