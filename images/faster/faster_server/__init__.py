"""OpenAI-compatible transcription server on faster-whisper."""
__version__ = "0.1.0"
