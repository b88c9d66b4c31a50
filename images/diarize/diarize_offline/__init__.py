"""Offline speaker diarization (no HuggingFace token, weights shipped by pip packages).

    from diarize_offline import OfflineDiarizer
    d = OfflineDiarizer(device="cpu", threads=None)
    df = d(audio_16k_float32_or_path, num_speakers=None, min_speakers=None, max_speakers=None)
    # DataFrame: start, end, speaker ("SPEAKER_00", ...) sorted by start
    ann = d.annotation(df)  # pyannote.core.Annotation
"""
from .core import OfflineDiarizer, Params, load_audio
from .vad import SpeechDetector

__all__ = ["OfflineDiarizer", "Params", "SpeechDetector", "load_audio"]
