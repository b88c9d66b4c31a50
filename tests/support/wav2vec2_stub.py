"""A tiny randomly initialised wav2vec2 CTC model with a given character vocabulary, saved with its processor as
an operator would upload an alignment model (`model_name=<folder>`). Plumbing only: random weights give
meaningless times. Needs torch and transformers (the ML environment)."""
from __future__ import annotations

import json
from pathlib import Path


def save_random_wav2vec2(folder: Path, vocab: list[str]) -> str:
    """`vocab` starts with `<pad>` (the CTC blank); `|` is the word delimiter. Returns the folder."""
    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(vocab)}))
    tok = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                               word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4, pad_token_id=0)
    Wav2Vec2ForCTC(cfg).eval().save_pretrained(folder)
    return str(folder)
