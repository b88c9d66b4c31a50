"""stages.monitoring's facts, pyinfra-style: the shell command run on files laid out as a host has them, its output,
and what the stage decides from it (whose Prometheus is this: ours to configure, or the host's to extend)."""

from __future__ import annotations

import subprocess

import pytest

from stages.monitoring import MountPoint, PrometheusSetup, host_owns_prometheus, watched_mounts
from stages.settings import Platform, read_group_data

DEBIAN_DEFAULTS = ('# Set the command-line arguments to pass to the server.\n# Due to shell escaping, ...\n'
                   'ARGS=""\n')


def run_fact(fact, **args) -> dict:
    out = subprocess.run(["bash", "-c", fact.command(**args)], capture_output=True, text=True, check=True).stdout
    return fact.process(out.splitlines())


@pytest.fixture
def host_files(tmp_path):
    def lay(defaults: str | None, config: str | None, config_name: str = "prometheus.yml"):
        d = tmp_path / "default-prometheus"
        if defaults is not None:
            d.write_text(defaults.replace("CONFIG", str(tmp_path / config_name)))
        if config is not None:
            (tmp_path / config_name).write_text(config)
        return str(d)
    return lay


def test_a_fresh_host_or_debians_defaults_are_ours_to_configure(host_files):
    for defaults in (None, DEBIAN_DEFAULTS):
        setup = run_fact(PrometheusSetup(), defaults=host_files(defaults, None))
        assert setup["defaults"] in ("absent", "debian")
        assert not host_owns_prometheus(setup)


def test_our_own_files_stay_ours(host_files):
    d = host_files('# prometheus\'s command line. Managed by pyinfra (whisper-platform); edit group_data\n'
                   'ARGS="--config.file=CONFIG --web.listen-address=127.0.0.1:9090"\n',
                   "# Prometheus for whisper-platform. Managed by pyinfra (whisper-platform); edit group_data.\n")
    setup = run_fact(PrometheusSetup(), defaults=d)
    assert (setup["defaults"], setup["config_state"]) == ("ours", "ours")
    assert setup["config"].endswith("/prometheus.yml")
    assert not host_owns_prometheus(setup)


def test_a_command_line_of_the_hosts_own_means_its_prometheus(host_files):
    d = host_files('ARGS="--config.file CONFIG --storage.tsdb.retention.time=90d"\n', "global: {}\n", "mine.yml")
    setup = run_fact(PrometheusSetup(), defaults=d)
    assert setup["defaults"] == "host" and setup["config"].endswith("/mine.yml")
    assert setup["config_state"] == "host"
    assert host_owns_prometheus(setup)


def test_a_config_of_the_hosts_own_behind_debians_defaults(host_files, tmp_path):
    d = host_files('ARGS="--config.file=CONFIG"\n', "scrape_configs:\n- job_name: theirs\n")
    setup = run_fact(PrometheusSetup(), defaults=d)
    assert setup["config_state"] == "host" and host_owns_prometheus(setup)


def test_mount_point_of_a_path_not_made_yet(tmp_path):
    assert run_fact(MountPoint(), path=str(tmp_path / "not" / "yet")) == \
        subprocess.run(["df", "-P", str(tmp_path)], capture_output=True, text=True).stdout.splitlines()[1].split()[5]


def test_watched_mounts_name_what_each_filesystem_holds():
    p = Platform.from_group_data(read_group_data())
    mounts = {"/var/lib/whisper-platform/jobs": "/", "/var/lib/docker": "/var/lib/docker"}
    assert watched_mounts(p, mounts.get) == [("/", "/var/lib/whisper-platform/jobs"),
                                            ("/var/lib/docker", "/var/lib/docker")]
    assert watched_mounts(p, lambda path: "/") == [("/", "/var/lib/whisper-platform/jobs, /var/lib/docker")]


def test_file_states_answers_for_many_files_in_one_command(tmp_path):
    import hashlib

    from stages.ops import FileStates
    (tmp_path / "a.yml").write_text("a: 1\n")
    (tmp_path / "with space").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "a.yml")
    paths = (str(tmp_path / "a.yml"), str(tmp_path / "with space"), str(tmp_path / "missing"), str(tmp_path / "link"))
    states = run_fact(FileStates(), paths=paths)
    assert set(states) == {paths[0], paths[1]}   # absent files and links are not files to compare
    assert states[paths[0]]["sha256"] == hashlib.sha256(b"a: 1\n").hexdigest()
    assert states[paths[0]]["mode"] == format((tmp_path / "a.yml").stat().st_mode & 0o777, "o")


def test_foreign_defaults_are_the_hosts_own_only(tmp_path):
    from stages.monitoring import ForeignDefaults
    files = {"debian": DEBIAN_DEFAULTS, "ours": "# Managed by pyinfra (whisper-platform)\nARGS=\"--x\"\n",
             "host": 'ARGS="--web.listen-address=:9100"\n'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = tuple(str(tmp_path / n) for n in (*files, "absent"))
    assert run_fact(ForeignDefaults(), paths=paths) == {str(tmp_path / "host")}
