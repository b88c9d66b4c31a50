"""The ownership marker: every file the deploy writes carries one of its spellings, and the shell test every detector
runs (stages.marker.owned_command) tells ours from a host's own, with a real shell on real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stages import marker
from stages.ops import below_header

REPO = Path(__file__).resolve().parents[2]
# the header lines earlier versions and this one write, as they stand on deployed hosts
OURS = [
    "# faster-whisper: managed by whisper-platform (pyinfra). Edit group_data, not this file.",
    "# Redis for the asynchronous transcription jobs: managed by whisper-platform (pyinfra); edit group_data.",
    "# Managed by whisper-platform (pyinfra). Local changes are overwritten on the next deploy.",
    "# Prometheus for whisper-platform. Managed by pyinfra (whisper-platform); edit group_data, not this file.",
    "# Prometheus: managed by whisper-platform; edit group_data, not this file.",
]
FIRST_VHOSTS = "# whisper.example.org: TLS, basic auth, CORS. Managed by pyinfra."
FOREIGN = [
    "# another team's site. Managed by pyinfra.",       # pyinfra manages it, but not for us
    "# whisper-platform was here once; this file is the host's own",
    "server { listen 80; }",
]


def owned(path: Path, **kw) -> bool:
    return subprocess.run(["sh", "-c", marker.owned_command(str(path), **kw)]).returncode == 0


@pytest.mark.parametrize("header", OURS)
def test_every_spelling_written_so_far_is_ours(tmp_path, header):
    f = tmp_path / "conf"
    f.write_text(header + "\nkey value\n")
    assert owned(f) and owned(f, first_line=True) and marker.is_ours(f.read_text())


@pytest.mark.parametrize("header", FOREIGN)
def test_a_hosts_own_file_is_not_ours(tmp_path, header):
    f = tmp_path / "conf"
    f.write_text(header + "\n")
    assert not owned(f) and not marker.is_ours(header)


def test_the_generic_pyinfra_line_counts_only_where_asked(tmp_path):
    """The first versions' vhosts said only "Managed by pyinfra": ours where the path is one of our vhosts'."""
    f = tmp_path / "whisper.example.org"
    f.write_text(FIRST_VHOSTS + "\n")
    assert not owned(f) and owned(f, generic=True) and marker.is_ours(FIRST_VHOSTS, generic=True)


def test_a_missing_file_and_a_marker_past_the_first_line(tmp_path):
    assert not owned(tmp_path / "absent")
    f = tmp_path / "prometheus.yml"
    f.write_text("# the host's config\n" + OURS[3] + "\n")
    assert owned(f) and not owned(f, first_line=True)
    g = tmp_path / "it's here"
    g.write_text(OURS[0] + "\n")
    assert owned(g)   # the path is quoted


TEMPLATES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "templates").rglob("*.j2")
                   if p.name not in ("scrape-jobs.yml.j2", "auth-map.conf.j2"))


def header(text: str) -> list[str]:
    """The comment lines a file begins with, as stages.ops.below_header leaves them out."""
    lines = text.splitlines()
    return lines[:len(lines) - len(below_header(text).splitlines())]


def test_every_spelling_of_the_past_is_still_known():
    assert marker.MARKER == "managed by whisper-platform" and marker.is_ours(f"# x: {marker.MARKER}")
    for old in marker.LEGACY:
        assert marker.is_ours(f"# {old.title()}")


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_writes_the_one_marker_in_its_header(template):
    """Every whole file the deploy renders says `MARKER`, spelled exactly so, on one line of its header (the comment
    lines it begins with: a later change of it is a header change, which restarts nothing), and no earlier spelling
    (scrape-jobs.yml.j2 is a block inside a host's config, marked by BEGIN/END; the auth map is ours by its name,
    which no detector asks). Within its first three lines, where the detectors that read only a first line (a
    Prometheus config) or a head find it."""
    text = (REPO / template).read_text()
    head = header(text)
    assert any(marker.MARKER in line for line in head[:3]), head[:3]
    assert not any("managed by pyinfra" in line.lower() for line in head), head


def python_made() -> dict[str, str]:
    """The files the stages write from Python text, not a template (the .env files and tokens are secrets that say
    what they are, compared by digest: their headers stay)."""
    from stages import autostart, monitoring_config as mc, redis
    from stages.settings import Platform, read_group_data
    p = Platform.from_group_data(read_group_data())
    out = {f"/etc/default/{pkg}": mc.render_defaults(pkg, "--x") for pkg in ("prometheus", "prometheus-node-exporter")}
    out.update({
        "redis exporter drop-in": mc.render_redis_exporter_dropin(p, "/etc/x.env"),
        "grafana drop-in": mc.render_grafana_dropin(p),
        "grafana datasource": mc.render_grafana_datasource(p),
        "grafana dashboards": mc.render_grafana_dashboards(),
        "journald namespace": autostart.journald_conf("200M"),
        "redis tmpfiles": redis.tmpfiles_conf(p),
        "redis drop-in": redis.unit_dropin(p),
    })
    return out


def test_what_the_stages_write_from_python_carries_the_one_marker_too():
    for name, text in python_made().items():
        head = header(text)
        assert any(marker.MARKER in line for line in head[:3]), (name, head)
        assert not any("managed by pyinfra" in line.lower() for line in head), (name, head)
