"""Fixtures for the offline diarization tests (run with .venv-ml's python: torch, silero-vad, resemblyzer).

Conversations are generated once per session with espeak-ng (fixed seeds) into a session temp folder.
"""
import os
import shutil

import pytest

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# the fixed evaluation set: (speakers, seed, overlaps), 60 s each
EVAL_SET = ([(n, seed, ov) for n in (2, 3) for seed in (0, 1) for ov in (False, True)]
            + [(4, 0, False), (4, 0, True), (1, 0, True)])


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed to synthesize conversations (apt-get install espeak-ng sox)")
    return tmp_path_factory.mktemp("diarize_synth")


@pytest.fixture(scope="session")
def conversation(synth_dir):
    from support.synth_conversations import make_conversation

    def make(n, seed, overlaps=False, duration_s=60.0):
        return make_conversation(n, seed, synth_dir, duration_s=duration_s, overlaps=overlaps)

    return make


@pytest.fixture(scope="session")
def diarizer():
    from diarize_offline import OfflineDiarizer

    return OfflineDiarizer(device="cpu")


@pytest.fixture(scope="session")
def eval_results(diarizer, conversation):
    """Diarize the fixed set once: [(conversation, dataframe, pyannote DER components)]."""
    from pyannote.core import Segment, Timeline
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    from support.synth_conversations import load_audio

    out = []
    for n, seed, ov in EVAL_SET:
        conv = conversation(n, seed, ov)
        df = diarizer(load_audio(conv.wav_path))
        ref = load_rttm(conv.rttm_path)[conv.uri]
        uem = Timeline([Segment(0, conv.duration_s)])
        comp = DiarizationErrorRate(collar=0.25)(ref, diarizer.annotation(df, conv.uri), uem=uem, detailed=True)
        out.append((conv, df, comp))
    return out
