"""The ownership marker: every file the deploy writes carries one of its spellings, and the shell test every detector
runs (stages.marker.owned_command) tells ours from a host's own, with a real shell on real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stages import marker

REPO = Path(__file__).resolve().parents[2]
# the header lines earlier versions and this one write, as they stand on deployed hosts
OURS = [
    "# faster-whisper: managed by whisper-platform (pyinfra). Edit group_data, not this file.",
    "# Redis for the asynchronous transcription jobs: managed by whisper-platform (pyinfra); edit group_data.",
    "# Managed by whisper-platform (pyinfra). Local changes are overwritten on the next deploy.",
    "# Prometheus for whisper-platform. Managed by pyinfra (whisper-platform); edit group_data, not this file.",
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


@pytest.mark.parametrize("template", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "templates").rglob("*.j2")
                                            if p.name not in ("scrape-jobs.yml.j2", "auth-map.conf.j2")))
def test_every_template_says_it_is_ours_in_its_header(template):
    """Every whole file the deploy renders carries a spelling every detector knows, in its first lines
    (scrape-jobs.yml.j2 is a block inside a config, marked by BEGIN/END; the auth map is ours by its name, which
    no detector asks). The generic spelling only where the file lives in a path of ours (vhosts named after our
    services, nginx files and the jobs script named whisper-platform)."""
    head = "\n".join((REPO / template).read_text().splitlines()[:3])
    generic = template.startswith("templates/nginx/") or template.endswith("jobs.lua.j2")
    assert marker.is_ours(head, generic=generic), head
