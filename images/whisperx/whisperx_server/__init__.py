"""WhisperX server: batched ASR, wav2vec2 alignment, speaker labels, /transcribe and an OpenAI face."""
__version__ = "0.1.0"
