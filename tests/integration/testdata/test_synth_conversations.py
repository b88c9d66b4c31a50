"""tests/support/synth_conversations.py: deterministic conversations with a reference RTTM (espeak-ng + sox, no models)."""
import shutil

import pytest

from support.synth_conversations import VOICE_POOL, load_audio, make_conversation

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                                reason="espeak-ng and sox are needed (apt-get install espeak-ng sox)")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("synth")


def test_turns_rttm_and_audio_agree(out):
    conv = make_conversation(3, 7, out, duration_s=40)
    assert conv.speakers == ["spk0", "spk1", "spk2"]
    assert len(set(conv.voices.values())) == 3 and set(conv.voices.values()) <= set(VOICE_POOL)
    audio = load_audio(conv.wav_path)
    assert abs(audio.size / 16000 - conv.duration_s) < 0.01
    assert 40 <= conv.duration_s <= 50
    for start, end, _spk, text in conv.turns:
        assert 1.0 <= end - start <= 8.0 + 1e-6, (start, end)
        assert text.strip()
    lines = conv.rttm_path.read_text().splitlines()
    assert len(lines) == len(conv.turns)
    first = lines[0].split()
    assert first[0] == "SPEAKER" and first[1] == conv.uri and first[7] == conv.turns[0][2]
    assert float(first[3]) == pytest.approx(conv.turns[0][0])
    # no overlaps asked: turns are separated by pauses
    for (_s0, e0, *_), (s1, *_rest) in zip(conv.turns, conv.turns[1:]):
        assert s1 - e0 >= 0.19
    # the reference turns hold the speech: the audio is quiet outside them
    quiet = audio.copy()
    for s, e, *_ in conv.turns:
        quiet[int(s * 16000): int(e * 16000) + 1] = 0
    assert abs(quiet).max() < 0.05


def test_same_arguments_same_files_and_cache(out, tmp_path):
    a = make_conversation(2, 3, out, duration_s=20, overlaps=True)
    mtime = a.wav_path.stat().st_mtime_ns
    again = make_conversation(2, 3, out, duration_s=20, overlaps=True)
    assert again.wav_path.stat().st_mtime_ns == mtime and again.turns == a.turns
    fresh = make_conversation(2, 3, tmp_path, duration_s=20, overlaps=True)
    assert fresh.wav_path.read_bytes() == a.wav_path.read_bytes()
    assert fresh.rttm_path.read_text() == a.rttm_path.read_text()
    other = make_conversation(2, 4, out, duration_s=20, overlaps=True)
    assert other.turns != a.turns


def test_overlaps_are_short_and_present(out):
    conv = make_conversation(2, 0, out, duration_s=90, overlaps=True)
    overlaps = [e0 - s1 for (s0, e0, *_), (s1, *_r) in zip(conv.turns, conv.turns[1:]) if s1 < e0]
    assert overlaps, "expected some overlapping turns"
    assert all(0 < o <= 1.0 + 1e-6 for o in overlaps)
    assert conv.text().split()[:3] == sorted(conv.turns)[0][3].split()[:3]


def test_rejects_more_speakers_than_voices(out):
    with pytest.raises(ValueError):
        make_conversation(len(VOICE_POOL) + 1, 0, out)
