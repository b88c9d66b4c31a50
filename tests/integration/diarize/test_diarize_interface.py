"""The OfflineDiarizer interface the WhisperX server relies on, with real models and espeak-ng audio."""
import socket
import subprocess

import numpy as np
import pytest

pytest.importorskip("torch", reason="offline diarization needs torch: run with .venv-ml/bin/python")
pytest.importorskip("silero_vad", reason="silero-vad is missing (make venv-ml installs it)")
pytest.importorskip("resemblyzer", reason="resemblyzer is missing (make venv-ml installs it)")
pytest.importorskip("pyannote.metrics", reason="pyannote.metrics is needed to score diarization")

import pandas as pd  # noqa: E402

from support.synth_conversations import load_audio  # noqa: E402


def test_dataframe_shape_and_labels(diarizer, conversation):
    conv = conversation(2, 0)
    df = diarizer(load_audio(conv.wav_path))
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[:3]) == ["start", "end", "speaker"]
    assert df["start"].is_monotonic_increasing
    assert (df["end"] > df["start"]).all()
    assert set(df.speaker) == {"SPEAKER_00", "SPEAKER_01"}
    assert df.speaker.iloc[0] == "SPEAKER_00"  # numbered in order of first appearance
    ann = diarizer.annotation(df)
    assert sorted(ann.labels()) == ["SPEAKER_00", "SPEAKER_01"]
    assert abs(ann.get_timeline().support().duration() - (df.end - df.start).sum()) < 1e-3


def test_file_path_and_other_formats(diarizer, conversation, tmp_path):
    conv = conversation(2, 1)
    from_array = diarizer(load_audio(conv.wav_path))
    from_path = diarizer(str(conv.wav_path))
    pd.testing.assert_frame_equal(from_array, from_path)
    mp3 = tmp_path / "conv.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(conv.wav_path), str(mp3)], check=True)
    from_mp3 = diarizer(mp3)
    assert from_mp3.speaker.nunique() == 2


@pytest.mark.parametrize("n", [2, 3])
def test_num_speakers_forces_the_count(diarizer, conversation, n):
    conv = conversation(3, 1)
    df = diarizer(load_audio(conv.wav_path), num_speakers=n)
    assert df.speaker.nunique() == n


def test_min_max_bound_the_automatic_count(diarizer, conversation):
    audio = load_audio(conversation(3, 0).wav_path)
    assert diarizer(audio).speaker.nunique() == 3
    assert diarizer(audio, max_speakers=2).speaker.nunique() == 2
    assert diarizer(audio, min_speakers=4).speaker.nunique() == 4
    assert diarizer(audio, min_speakers=2, max_speakers=5).speaker.nunique() == 3


def test_silence_and_tiny_input(diarizer):
    for audio in (np.zeros(16000 * 5, dtype=np.float32), np.zeros(10, dtype=np.float32)):
        df = diarizer(audio)
        assert len(df) == 0 and list(df.columns) == ["start", "end", "speaker"]


def test_assign_word_speakers_from_whisperx(diarizer, conversation):
    """whisperx.assign_word_speakers accepts the DataFrame; words inside a turn get that turn's speaker."""
    whisperx_diarize = pytest.importorskip("whisperx.diarize", reason="whisperx is not installed")
    conv = conversation(2, 0)
    df = diarizer(load_audio(conv.wav_path))
    ref_to_hyp = {}
    segments = []
    for start, end, _spk, text in conv.turns:
        words = text.split()
        step = (end - start) / len(words)
        ws = [{"word": w, "start": start + i * step, "end": start + (i + 1) * step} for i, w in enumerate(words)]
        segments.append({"start": start, "end": end, "text": text, "words": ws})
    result = whisperx_diarize.assign_word_speakers(df, {"segments": segments})
    right = 0
    for seg, (_, _, spk, _) in zip(result["segments"], conv.turns):
        ref_to_hyp.setdefault(spk, seg.get("speaker"))
        right += seg.get("speaker") == ref_to_hyp[spk]
    assert len(set(ref_to_hyp.values())) == 2
    assert right >= 0.95 * len(conv.turns)


def test_needs_no_network_and_no_token(monkeypatch, conversation):
    """Loading the shipped weights and diarizing open no connection (the HF hub is unreachable here anyway)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, addr):
        attempts.append(addr)
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    from diarize_offline import OfflineDiarizer

    d = OfflineDiarizer(device="cpu", threads=1)
    df = d(load_audio(conversation(2, 1).wav_path))
    monkeypatch.setattr(socket.socket, "connect", real_connect)
    assert df.speaker.nunique() == 2
    assert attempts == []


def test_restores_torch_threads(diarizer, conversation):
    import torch

    before = torch.get_num_threads()
    diarizer(load_audio(conversation(2, 1).wav_path))
    assert torch.get_num_threads() == before
