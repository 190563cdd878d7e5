"""Built-in synthetic text tasks (no download), deterministic by seed, and their word-level tokenizer.

Sentences mix filler words with keywords of four topics (sport, food, music, weather):

- ``topic``: one sentence, label = its topic (4 classes); two or three keywords of the topic plus, in half the
  rows, one distractor keyword of another topic (the majority decides).                  (SST-2-like)
- ``match``: a sentence pair, label = whether both are about the same topic (2 classes).  (MRPC/QQP-like)
- ``similarity``: a sentence pair of three keywords each; the gold score is ``5 * shared / 3`` and the label
  its 0.2-wide bin (26 classes), exactly as STS-B is handled (Pearson / Spearman).       (STS-B-like)

Splits ``train``, ``val``, ``test`` come from disjoint seeds. :func:`word_tokenizer` is a word-level
tokenizer over this vocabulary (BERT-style ``[CLS] a [SEP] b [SEP]`` or T5-style ``a </s> b </s>``), used by the
tiny randomly initialised test backbones; real backbones tokenise the same sentences with their own tokenizer.
"""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np

from gist_ray.text.metrics import STSB_CLASSES, score_to_bin
from gist_ray.text.splits import RawSplit

TOPICS: dict[str, tuple[str, ...]] = {
    "sport": ("football", "tennis", "goal", "match", "team", "coach", "stadium", "race", "player", "score",
              "league", "runner"),
    "food": ("bread", "cheese", "soup", "pasta", "kitchen", "recipe", "dinner", "apple", "coffee", "bakery",
             "salad", "chef"),
    "music": ("guitar", "piano", "song", "concert", "band", "drum", "melody", "singer", "violin", "album",
              "chorus", "orchestra"),
    "weather": ("rain", "snow", "storm", "cloud", "wind", "sunshine", "thunder", "forecast", "fog", "frost",
                "breeze", "temperature"),
}
FILLER = ("the", "a", "today", "we", "saw", "some", "very", "and", "then", "it", "was", "there", "people",
          "many", "again", "near", "town", "with", "our", "friends", "after", "lunch", "everyone", "talked",
          "about", "this", "week", "quite", "long", "new")
TASKS = {"topic": len(TOPICS), "match": 2, "similarity": STSB_CLASSES}
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
VOCAB = tuple(sorted(set(FILLER) | {w for words in TOPICS.values() for w in words}))
_NAMES = tuple(TOPICS)


def _rng(task: str, split: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"text-{task}-{SPLIT_OFFSETS[split]}-{seed}".encode()))


def _sentence(rng: np.random.Generator, keywords: list[str]) -> str:
    words = list(keywords) + list(rng.choice(FILLER, size=int(rng.integers(4, 10))))
    rng.shuffle(words)
    return " ".join(words)


def _keywords(rng: np.random.Generator, topic: int, k: int) -> list[str]:
    return list(rng.choice(TOPICS[_NAMES[topic]], size=k, replace=False))


def _topic_row(rng: np.random.Generator) -> tuple[str, int]:
    topic = int(rng.integers(len(_NAMES)))
    words = _keywords(rng, topic, int(rng.integers(2, 4)))
    if rng.random() < 0.5:
        other = (topic + int(rng.integers(1, len(_NAMES)))) % len(_NAMES)
        words += _keywords(rng, other, 1)
    return _sentence(rng, words), topic


def _match_row(rng: np.random.Generator) -> tuple[str, str, int]:
    a = int(rng.integers(len(_NAMES)))
    same = rng.random() < 0.5
    b = a if same else (a + int(rng.integers(1, len(_NAMES)))) % len(_NAMES)
    return _sentence(rng, _keywords(rng, a, 2)), _sentence(rng, _keywords(rng, b, 2)), int(same)


def _similarity_row(rng: np.random.Generator) -> tuple[str, str, float]:
    pool = [w for words in TOPICS.values() for w in words]
    shared = int(rng.integers(0, 4))
    picked = list(rng.choice(pool, size=6 - shared, replace=False))
    a = picked[:3]
    b = picked[:shared] + picked[3 : 6 - shared]
    return _sentence(rng, a), _sentence(rng, b), round(5.0 * shared / 3.0, 4)


def synthetic_split(task: str, split: str, n: int, seed: int = 0) -> RawSplit:
    """``n`` rows of synthetic text task ``task`` for split ``train`` / ``val`` / ``test``."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic text task {task!r}; known: {', '.join(TASKS)}")
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r} of synthetic text task {task!r}; known: {', '.join(SPLIT_OFFSETS)}")
    if n < 1:
        raise ValueError(f"synthetic text task {task!r}: n must be >= 1, got {n}")
    rng = _rng(task, split, seed)
    if task == "topic":
        rows = [_topic_row(rng) for _ in range(n)]
        return RawSplit([r[0] for r in rows], None, np.array([r[1] for r in rows]), TASKS[task], name=split, task=task)
    if task == "match":
        rows3 = [_match_row(rng) for _ in range(n)]
        return RawSplit([r[0] for r in rows3], [r[1] for r in rows3], np.array([r[2] for r in rows3]), TASKS[task],
                        name=split, task=task)
    sims = [_similarity_row(rng) for _ in range(n)]
    scores = np.array([r[2] for r in sims], dtype=np.float32)
    return RawSplit([r[0] for r in sims], [r[1] for r in sims], score_to_bin(scores), TASKS[task], scores=scores,
                    name=split, task=task)


def word_tokenizer(style: Literal["bert", "t5"] = "bert", vocab: tuple[str, ...] = VOCAB):
    """A word-level fast tokenizer over ``vocab`` (lower-cased, punctuation split, unknown words -> UNK)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if style == "bert":
        specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    elif style == "t5":
        specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        raise ValueError(f"unknown tokenizer style {style!r}; known: bert, t5")
    words = list(specials.values()) + [w for w in vocab if w not in specials.values()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ids = {w: i for i, w in enumerate(words)}
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
        names = ["input_ids", "token_type_ids", "attention_mask"]
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", ids["</s>"])])
        names = ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=names, **specials)
