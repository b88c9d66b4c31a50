"""Per-request decode options (OpenAI's ``prompt`` and ``temperature``), faster-whisper's hallucination guards and
Whisper's own word timestamps on the batched decoder (:class:`.asr.AsrPipeline`).

whisperx decodes each batch of 30 s chunks once, at temperature 0, with the prompt and beam settings of its options,
and never looks at the thresholds. Here:

- :func:`decoding` gives one request its own options: the pipeline is shared by every request on that model (the
  model manager's cache), so the options (and the tokenizer, set per language) are set under the pipeline's lock,
  for this request's ASR only, and the server's defaults are back afterwards.
- :func:`decode_batch` honours ``temperatures`` and the guards as faster-whisper's own ``transcribe`` does: a chunk
  whose batched decode fails a guard (compression ratio above ``compression_ratio_threshold``: a loop; average
  log-probability below ``log_prob_threshold``) is decoded again on its own up faster-whisper's temperature ladder
  (:func:`decode_alone`), and dropped as silence where its no-speech probability is above ``no_speech_threshold``
  with a low log-probability. A request with a temperature above 0 is sampled at that temperature, chunk by chunk.
  Asked for, it times the words from the same encoder output (:func:`word_times`).

``condition_on_previous_text`` and ``hallucination_silence_threshold`` are set too but change nothing here: the
batched decoder decodes each chunk on its own (no previous text), without timestamps.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Optional

from stt_common.settings import temperatures

log = logging.getLogger("whisperx_server")


def needs_fallback(text: str, avg_logprob: float, opts) -> bool:
    """Whether a temperature-0 decode fails a guard (faster-whisper's checks in generate_with_fallback)."""
    from faster_whisper.transcribe import get_compression_ratio
    if opts.compression_ratio_threshold is not None and \
            get_compression_ratio(text.strip()) > opts.compression_ratio_threshold:
        return True
    return opts.log_prob_threshold is not None and avg_logprob < opts.log_prob_threshold


def silent(result, avg_logprob: float, opts) -> bool:
    """faster-whisper's no-speech check: likely silence and no confident text."""
    return opts.no_speech_threshold is not None and result.no_speech_prob > opts.no_speech_threshold and \
        opts.log_prob_threshold is not None and avg_logprob < opts.log_prob_threshold


def decode_alone(pipe, features, opts, stop=None, encoded=None) -> tuple:
    """One chunk up the temperature ladder as faster-whisper's ``generate_with_fallback`` climbs it (each step is
    its own one-temperature call, so that ``stop()`` runs between steps: a cancelled request stops after one
    decode, not a whole ladder): (tokens, text, avg_logprob); no tokens and text "" for silence. ``encoded``: the
    chunk's encoder output where the caller has it."""
    model, tokenizer = pipe.model, pipe.tokenizer
    previous = tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
    prompt = model.get_prompt(tokenizer, previous, without_timestamps=opts.without_timestamps, prefix=opts.prefix,
                              hotwords=opts.hotwords)
    if encoded is None:
        encoded = model.encode(features)   # a batch of one, a CTranslate2 StorageView
    tried = []
    for t in opts.temperatures:
        if stop is not None:
            stop()
        result, avg_logprob, _t, ratio = model.generate_with_fallback(encoded, prompt, tokenizer,
                                                                      replace(opts, temperatures=[t]))
        tried.append((result, avg_logprob, ratio))
        if silent(result, avg_logprob, opts) or not needs_fallback(tokenizer.decode(result.sequences_ids[0]),
                                                                   avg_logprob, opts):
            break
    else:   # every step failed: faster-whisper keeps the likeliest, of those that are no loop where there are some
        limit = opts.compression_ratio_threshold
        tried = [max([x for x in tried if limit is None or x[2] <= limit] or tried, key=lambda x: x[1])]
    result, avg_logprob, _ratio = tried[-1]
    if opts.no_speech_threshold is not None and result.no_speech_prob > opts.no_speech_threshold and not (
            opts.log_prob_threshold is not None and avg_logprob > opts.log_prob_threshold):
        return [], "", avg_logprob   # silence: faster-whisper emits nothing for this window
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    return tokens, tokenizer.decode(tokens), avg_logprob


def generate_batch(pipe, features, opts) -> tuple:
    """whisperx's batched decode of one batch (temperature 0, the request's prompt), keeping what it computes on
    the way: (encoder output, tokens per chunk, text per chunk, avg_logprob per chunk). The same calls and options
    as ``WhisperModel.generate_segment_batched``, which keeps neither the encoder output nor the tokens."""
    model, tokenizer = pipe.model, pipe.tokenizer
    previous = tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt is not None else []
    prompt = model.get_prompt(tokenizer, previous, without_timestamps=opts.without_timestamps, prefix=opts.prefix,
                              hotwords=opts.hotwords)
    encoded = model.encode(features)
    results = model.model.generate(
        encoded, [prompt] * features.shape[0], beam_size=opts.beam_size, patience=opts.patience,
        length_penalty=opts.length_penalty, max_length=model.max_length, suppress_blank=opts.suppress_blank,
        suppress_tokens=opts.suppress_tokens, no_repeat_ngram_size=opts.no_repeat_ngram_size,
        repetition_penalty=opts.repetition_penalty, return_scores=True)
    tokens, logprobs = [], []
    for r in results:
        seq = r.sequences_ids[0]
        logprobs.append(r.scores[0] * (len(seq) ** opts.length_penalty) / (len(seq) + 1))
        tokens.append([t for t in seq if t < tokenizer.eot])
    return encoded, tokens, list(tokenizer.tokenizer.decode_batch(tokens)), logprobs


def decode_batch(pipe, features, frames=None, offsets=None, timings: dict | None = None) -> list[dict]:
    """One batch of 30 s feature windows through the batched decoder with ``pipe.options`` (the request's prompt,
    temperatures and guards, see :func:`decoding`): [{"text", "avg_logprob"}] per chunk, plus ``words`` (faster-
    whisper's own cross-attention word timestamps, seconds from ``offsets``) when ``frames`` (each chunk's
    length in mel frames) is given (``timings["words"]`` adds the seconds that took). A chunk whose decode fails a
    guard is decoded again alone up the ladder."""
    opts, n = pipe.options, features.shape[0]
    stop = getattr(pipe, "decode_stop", None)
    tokens: list[list[int]]
    if opts.temperatures and opts.temperatures[0] > 0:   # a request's temperature: sampled, chunk by chunk
        encoded, tokens, texts, logprobs, again = None, [[]] * n, [""] * n, [0.0] * n, list(range(n))
    else:
        encoded, tokens, texts, logprobs = generate_batch(pipe, features, opts)
        again = [i for i in range(n) if len(opts.temperatures) > 1 and needs_fallback(texts[i], logprobs[i], opts)]
    for i in again:
        tokens[i], texts[i], logprobs[i] = decode_alone(pipe, features[i], opts, stop)
    if again:
        log.debug("decoded %d of %d chunks again (guards or temperature)", len(again), n)
    out = [{"text": t, "avg_logprob": lp} for t, lp in zip(texts, logprobs)]
    if frames is not None:
        t0 = time.monotonic()
        if encoded is None:
            encoded = pipe.model.encode(features)
        for o, words in zip(out, word_times(pipe, tokens, encoded, frames, offsets or [0.0] * n)):
            o["words"] = words
        if timings is not None:
            timings["words"] = timings.get("words", 0.0) + time.monotonic() - t0
    return out


def word_times(pipe, tokens: list, encoded, frames: list, offsets: list) -> list[list[dict]]:
    """faster-whisper's word timestamps (cross-attention and dynamic time warping over the encoder output, the
    same ``WhisperModel.add_word_timestamps`` its own ``word_timestamps=True`` runs) for decoded chunks:
    per chunk, [{"word", "start", "end", "score"}] in seconds from the chunk's offset."""
    model, tokenizer, opts = pipe.model, pipe.tokenizer, pipe.options
    fps = model.frames_per_second
    # add_word_timestamps reads chunks as lists of sub-segments; each chunk is one here, seek = its offset in frames
    chunks = [[{"tokens": tk or [tokenizer.eot], "seek": round(off * fps), "start": off, "end": off + f / fps}]
              for tk, f, off in zip(tokens, frames, offsets)]
    model.add_word_timestamps(chunks, tokenizer, encoded, [int(f) for f in frames], opts.prepend_punctuations,
                              opts.append_punctuations, last_speech_timestamp=offsets[0] if offsets else 0.0)
    out = []
    for tk, chunk in zip(tokens, chunks):
        words = chunk[0].get("words") or [] if tk else []
        out.append([{"word": w["word"], "start": float(w["start"]), "end": float(w["end"]),
                     "score": float(w["probability"])} for w in words if w["word"].strip()])
    return out


@contextmanager
def decoding(pipe, guards: dict, prompt: Optional[str] = None, temperature: float = 0.0, stop=None):
    """The pipeline with one request's options (server guards, its prompt and temperature) and its ``stop``
    (checked between the decodes of a chunk that climbs the ladder), exclusively; the server's defaults are back
    on exit."""
    with pipe.decode_lock:
        saved, tokenizer = pipe.options, pipe.tokenizer
        pipe.options = replace(saved, initial_prompt=(prompt or "").strip() or None,
                               temperatures=temperatures(temperature), **guards)
        pipe.decode_stop = stop
        try:
            yield pipe
        finally:
            pipe.options, pipe.tokenizer, pipe.decode_stop = saved, tokenizer, None
