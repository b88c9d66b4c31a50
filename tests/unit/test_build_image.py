"""stages/host/build_image.py: docker build's output in, the deploy's progress lines out (a fake clock)."""
import io

import pytest

from stages.host.build_image import Progress, docker_command, main, parse_step


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("line, expected", [
    ("Step 3/12 : RUN pip install -r /tmp/req.txt", ("3/12", "RUN pip install -r /tmp/req.txt")),
    ("#7 [3/9] RUN apt-get update", ("3/9", "RUN apt-get update")),
    ("#9 [build 2/5] COPY common/ /app/common/", ("2/5", "COPY common/ /app/common/")),
    (" ---> Running in 3249921b9a33", None),
    ("Collecting torch==2.8.0", None),
    ("#7 0.512 Collecting torch", None),
])
def test_parse_step(line, expected):
    assert parse_step(line) == expected


def test_long_step_text_is_shortened():
    step = parse_step("Step 1/2 : RUN " + "x" * 300)
    assert len(step[1]) == 100 and step[1].endswith("...")


def run_lines(lines, clock=None):
    out = io.StringIO()
    progress = Progress("img:tag", out=out, clock=clock or Clock())
    for line in lines:
        progress.line(line)
    return progress, out.getvalue().splitlines()


def test_steps_cached_and_elapsed():
    clock = Clock()
    out = io.StringIO()
    progress = Progress("img:tag", out=out, clock=clock)
    progress.line("Step 1/3 : FROM base")
    progress.line(" ---> 1234")
    progress.line("Step 2/3 : RUN pip install torch")
    progress.line(" ---> Using cache")
    clock.now += 125
    progress.line("Step 3/3 : RUN pip install whisperx")
    progress.line("Collecting whisperx")  # pip's own output: logged, not printed
    assert out.getvalue().splitlines() == [
        "build img:tag: step 1/3 FROM base (+0m00s)",
        "build img:tag: step 2/3 RUN pip install torch (+0m00s)",
        "build img:tag: step 2/3 cached",
        "build img:tag: step 3/3 RUN pip install whisperx (+2m05s)",
    ]


def test_buildkit_cached_marker():
    _, lines = run_lines(["#5 [2/4] RUN pip install torch", "#5 CACHED"])
    assert lines[-1] == "build img:tag: step 2/4 cached"


def test_heartbeat_and_silence():
    clock = Clock()
    out = io.StringIO()
    progress = Progress("img:tag", out=out, clock=clock)
    progress.line("Step 4/9 : RUN pip install -r requirements.txt")
    clock.now += 190
    progress.line("Installing collected packages: torch")
    clock.now += 50
    progress.heartbeat()
    assert out.getvalue().splitlines()[-1] == (
        "build img:tag: step 4/9 still running (4m00s on this step, 4m00s in all, last output 50 s ago)")
    assert progress.silent_for() == 50


def test_hung_up_deploy_does_not_stop_the_build():
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError()

    progress = Progress("img:tag", out=Closed(), clock=Clock())
    progress.line("Step 1/2 : FROM base")  # no exception: the build goes on, logging to its file
    assert progress.quiet


def test_docker_command_with_wheelhouse():
    args = type("Args", (), dict(file="/ctx/w/Dockerfile", tag="w:src-1", build_arg=["BASE_IMAGE=b"],
                                 label=["k=v"], wheelhouse="/wh", wheelhouse_port=3141, context="/ctx"))
    assert docker_command(args) == [
        "docker", "build", "--force-rm", "-f", "/ctx/w/Dockerfile", "-t", "w:src-1", "--build-arg", "BASE_IMAGE=b",
        "--label", "k=v", "--network", "host", "--build-arg", "PIP_WHEELHOUSE_URL=http://127.0.0.1:3141/", "/ctx"]
    args.wheelhouse = ""
    assert "--network" not in docker_command(args)


def test_missing_wheelhouse_is_a_clear_error(tmp_path, capsys):
    rc = main(["--tag", "t:1", "--file", "Dockerfile", "--wheelhouse", str(tmp_path / "nope"),
               "--log", str(tmp_path / "log"), str(tmp_path)])
    assert rc == 2
    assert "make wheelhouse creates it" in capsys.readouterr().out
