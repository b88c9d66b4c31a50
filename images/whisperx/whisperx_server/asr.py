"""The ASR pipeline: a faster-whisper model decoded the way whisperx decodes it (speech chunks of up to 30 s,
batched, no previous text, whisperx's decoding options), built without importing whisperx.

``import whisperx.asr`` brings transformers, pyannote.audio and lightning along (measured here: most of the
seconds a cold start spends importing); faster-whisper alone brings CTranslate2 and tokenizers. So the server
loads this at start and imports whisperx only when a request needs what only it has: a wav2vec2 alignment model
(:mod:`.alignment`), pyannote's diarization, or its pyannote VAD (``STT_VAD=pyannote``).

The request's options (prompt, temperature, guards) and its stop check are set by :func:`.decoding.decoding`
under ``decode_lock``; batches are decoded by :func:`.decoding.decode_batch`.
"""
from __future__ import annotations

import threading

import numpy as np

SAMPLE_RATE = 16000
CHUNK_S = 30
N_SAMPLES = CHUNK_S * SAMPLE_RATE

# whisperx.load_model's default decoding options (whisperx 3.8): beam search, the temperature ladder and the
# guards faster-whisper uses, no previous text, no timestamps in the decoded text
WHISPERX_OPTIONS = {
    "beam_size": 5, "best_of": 5, "patience": 1, "length_penalty": 1, "repetition_penalty": 1,
    "no_repeat_ngram_size": 0, "temperatures": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "compression_ratio_threshold": 2.4,
    "log_prob_threshold": -1.0, "no_speech_threshold": 0.6, "condition_on_previous_text": False,
    "prompt_reset_on_temperature": 0.5, "initial_prompt": None, "prefix": None, "suppress_blank": True,
    "suppress_tokens": [-1], "without_timestamps": True, "max_initial_timestamp": 0.0, "word_timestamps": False,
    "prepend_punctuations": "\"'“¿([{-", "append_punctuations": "\"'.。,，!！?？:：”)]}、",
    "max_new_tokens": None, "clip_timestamps": None, "hallucination_silence_threshold": None, "hotwords": None,
}


class AsrPipeline:
    """A loaded model, its decoding options, its tokenizer (set per request's language) and its VAD."""

    def __init__(self, model, vad, language: str | None = None):
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions
        self.model, self.vad_model, self.preset_language = model, vad, language
        self.options = TranscriptionOptions(**WHISPERX_OPTIONS, multilingual=model.model.is_multilingual)
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                   language=language) if language else None
        self.decode_lock = threading.Lock()   # one request's options at a time (.decoding.decoding)
        self.decode_stop = None

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features of up to 30 s of audio, padded to 30 s: (mels, 3000). whisperx's own function (torch's
        STFT, the same numbers as the library; ``whisperx.audio`` imports nothing heavier than torch)."""
        from whisperx.audio import log_mel_spectrogram
        audio = np.ascontiguousarray(audio[:N_SAMPLES], dtype=np.float32)
        n_mels = self.model.feat_kwargs.get("feature_size") or 80
        return log_mel_spectrogram(audio, n_mels=n_mels, padding=N_SAMPLES - len(audio)).numpy()

    def detect_language(self, audio: np.ndarray) -> str:
        """The language of the first 30 s (whisperx's rule: Whisper's most likely language token)."""
        encoded = self.model.encode(self.features(audio))
        return self.model.model.detect_language(encoded)[0][0][0][2:-2]

    def speech_chunks(self, audio: np.ndarray, stop=None) -> list[tuple[int, int]]:
        """(start, end) samples of the chunks to decode: speech merged into chunks of up to 30 s."""
        return self.vad_model.chunks(audio, stop)


def load_pipeline(arch: str, *, device: str, compute_type: str, threads: int, local_files_only: bool,
                  vad: str = "silero") -> AsrPipeline:
    """faster-whisper's model for ``arch`` (a folder, a short name or a hub id) and the VAD named by ``vad``."""
    from faster_whisper import WhisperModel
    model = WhisperModel(arch, device=device, compute_type=compute_type, cpu_threads=threads,
                         local_files_only=local_files_only)
    language = "en" if arch.rstrip("/").endswith(".en") else None
    return AsrPipeline(model, SileroChunks() if vad == "silero" else PyannoteChunks(device), language)


def merge_regions(regions: list[tuple[int, int]], chunk_s: float = CHUNK_S) -> list[tuple[int, int]]:
    """Speech regions (samples, each at most ``chunk_s`` long) merged into chunks of at most ``chunk_s`` seconds,
    a chunk ending where adding the next region would make it longer (whisperx's ``Vad.merge_chunks`` rule)."""
    out: list[tuple[int, int]] = []
    limit = int(chunk_s * SAMPLE_RATE)
    for a, b in regions:
        if out and b - out[-1][0] <= limit:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


class SileroChunks:
    """silero-vad's shipped ONNX model (``diarize_offline.SpeechDetector``, threshold 0.5 as whisperx's VAD onset):
    a pass over 10 minutes takes about 2 s on one core, against tens of seconds for pyannote's segmentation model."""

    def __init__(self):
        from diarize_offline.vad import SpeechDetector
        self.detector = SpeechDetector(threshold=0.5)

    def chunks(self, audio: np.ndarray, stop=None, chunk_s: float = CHUNK_S) -> list[tuple[int, int]]:
        return merge_regions(self.detector.regions(audio, max_speech_s=chunk_s), chunk_s)


class PyannoteChunks:
    """whisperx's default VAD (pyannote's segmentation model, shipped in the whisperx wheel), its chunks as whisperx
    merges them; the pass checks the request's stop between its batches (:func:`.transcription.stoppable_vad`)."""

    def __init__(self, device: str):
        import torch
        from whisperx.vads import Pyannote

        from .transcription import stoppable_vad
        self.vad = Pyannote(torch.device(device), token=None, vad_onset=0.5, vad_offset=0.363, chunk_size=CHUNK_S)
        stoppable_vad(self.vad)

    def chunks(self, audio: np.ndarray, stop=None, chunk_s: float = CHUNK_S) -> list[tuple[int, int]]:
        from whisperx.vads import Pyannote

        from .transcription import stopping
        with stopping(stop):
            found = self.vad({"waveform": Pyannote.preprocess_audio(audio), "sample_rate": SAMPLE_RATE})
        merged = Pyannote.merge_chunks(found, chunk_s, onset=0.5, offset=0.363)
        return [(int(c["start"] * SAMPLE_RATE), int(c["end"] * SAMPLE_RATE)) for c in merged]
