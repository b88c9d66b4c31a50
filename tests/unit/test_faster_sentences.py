"""faster_server.engine.split_sentences: the batched decoder's window-sized segments, cut into sentence-sized
ones by their word timings (window of text in, segments out). The tokenizer stands in for the model's: the
splitting logic is what is tested here; tests/integration/faster runs it on real speech."""
from dataclasses import dataclass
from typing import List, Optional

from faster_server.engine import split_sentences


@dataclass
class W:   # faster_whisper.transcribe.Word's fields
    start: float
    end: float
    word: str
    probability: float = 0.9


@dataclass
class S:   # faster_whisper.transcribe.Segment's fields
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: List[int]
    avg_logprob: float = -0.2
    compression_ratio: float = 1.5
    no_speech_prob: float = 0.01
    words: Optional[List[W]] = None
    temperature: float = 0.0


class Model:
    class hf_tokenizer:
        @staticmethod
        def encode(text, add_special_tokens=False):
            return type("Encoding", (), {"ids": [len(w) for w in text.split()]})()


def window(*timed):
    words = [W(a, b, t) for a, b, t in timed]
    return S(0, 0, words[0].start, words[-1].end, "".join(w.word for w in words), [1, 2, 3], words=words)


def test_cut_after_each_sentence_end():
    seg = window((0.0, 0.4, " Hello"), (0.4, 0.9, " everyone."), (1.2, 1.5, " Are"), (1.5, 1.8, " you"),
                 (1.8, 2.3, " ready?"), (2.5, 2.9, " Yes!"))
    parts = split_sentences(seg, Model)
    assert [p.text for p in parts] == [" Hello everyone.", " Are you ready?", " Yes!"]
    assert [(p.start, p.end) for p in parts] == [(0.0, 0.9), (1.2, 2.3), (2.5, 2.9)]
    assert parts[1].tokens == [3, 3, 6] and all(p.avg_logprob == -0.2 for p in parts)
    assert "".join(p.text for p in parts) == seg.text   # nothing lost, nothing added


def test_cut_at_a_pause_and_before_a_segment_grows_too_long():
    seg = window((0.0, 0.5, " so"), (0.5, 1.0, " then"), (2.5, 3.0, " later"), (3.0, 3.5, " on"))
    assert [p.text for p in split_sentences(seg, Model)] == [" so then", " later on"]
    runon = window(*[(i * 1.0, i * 1.0 + 0.9, f" w{i}") for i in range(40)])
    parts = split_sentences(runon, Model, max_seconds=15)
    assert all(p.end - p.start <= 15 for p in parts) and len(parts) == 3
    assert sum(len(p.words) for p in parts) == 40


def test_one_sentence_or_no_words_is_left_as_it_is():
    one = window((0.0, 0.5, " Fine."))
    assert split_sentences(one, Model) == [one]
    bare = S(0, 0, 0.0, 1.0, " hm", [5])
    assert split_sentences(bare, Model) == [bare]
