import pytest
import torch

from alignment.steps.logprobs import batched_logps, collate, model_logps, sequence_logps, token_logps
from alignment.assets.models import load_causal_lm


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, tiny_gpt2_dir, tiny_llama_dir):
    path = {"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[request.param]
    return load_causal_lm(path, torch.float32, torch.device("cpu"))


def test_collate_docstring_example():
    b = collate([[5, 6], [5, 6]], [[7, 0], [8]], pad_id=0)
    assert torch.equal(b["input_ids"], torch.tensor([[5, 6, 7, 0], [5, 6, 8, 0]]))
    assert torch.equal(b["attention_mask"], torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    assert torch.equal(b["completion_mask"], torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0]]))


def test_collate_prompts_of_different_lengths_and_empty_completion():
    b = collate([[1], [2, 3, 4]], [[9, 9, 9], []], pad_id=7)
    assert torch.equal(b["input_ids"], torch.tensor([[1, 9, 9, 9], [2, 3, 4, 7]]))
    assert torch.equal(b["attention_mask"], torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    assert torch.equal(b["completion_mask"], torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0]]))


def test_token_and_sequence_logps_by_hand():
    # vocab 3; logits chosen so log_softmax is easy to write down
    logits = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 2, 0]])
    tl = token_logps(logits, ids)
    assert torch.allclose(tl, torch.log(torch.tensor([[0.5, 0.6]])))
    assert torch.allclose(sequence_logps(tl, torch.tensor([[0, 0, 1]])), torch.log(torch.tensor([0.6])))
    assert torch.allclose(sequence_logps(tl, torch.tensor([[0, 1, 1]])), torch.log(torch.tensor([0.3])))


def _reference_logp(model, prompt, completion):
    """Independent HF computation: one unpadded forward, log_softmax, gather, sum over completion."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].double()  # (T, V)
    lp = torch.log_softmax(logits, -1)
    return sum(lp[t - 1, ids[0, t]].item() for t in range(len(prompt), ids.size(1)))


PROMPTS = [[5, 6, 7], [11, 12, 13, 14, 15, 16], [20], [30, 31]]
COMPS = [[40, 41, 0], [50], [60, 61, 62, 63, 64, 65, 66], [0]]  # 0 = EOS = pad: real EOS counts


def test_model_logps_matches_unpadded_hf(lm):
    batch = collate(PROMPTS, COMPS, pad_id=0)
    with torch.no_grad():
        got = model_logps(lm, batch)
    ref = torch.tensor([_reference_logp(lm, p, c) for p, c in zip(PROMPTS, COMPS)], dtype=torch.float64)
    assert got.shape == (4,)
    assert torch.allclose(got.double(), ref, atol=1e-5, rtol=0)
    assert torch.allclose(batched_logps(lm, PROMPTS, COMPS, 0, batch_size=3).double(), ref, atol=1e-5, rtol=0)


def test_padding_invariance(lm):
    with torch.no_grad():
        alone = torch.cat([model_logps(lm, collate([p], [c], 0)) for p, c in zip(PROMPTS, COMPS)])
        together = model_logps(lm, collate(PROMPTS, COMPS, 0))
        # an example padded much further (next to a long one) still gives the same value
        longer = model_logps(lm, collate([PROMPTS[0], list(range(1, 60))], [COMPS[0], [3]], 0))[0]
    assert torch.allclose(alone, together, atol=1e-5, rtol=0)
    assert torch.allclose(longer, alone[0], atol=1e-5, rtol=0)


def test_return_logits_and_gradients(lm):
    batch = collate(PROMPTS, COMPS, 0)
    lp, logits = model_logps(lm, batch, return_logits=True)
    assert logits.shape == (4, batch["input_ids"].size(1), lm.config.vocab_size)
    assert torch.isfinite(lp).all()
    assert batched_logps(lm, [], [], 0).shape == (0,)


def test_completion_tokens_left_aligns_the_completion_tokens():
    """The module docstring's example: prompt [5, 6], completions [7, 0] (a real EOS) and [8]."""
    from alignment.steps.logprobs import completion_tokens
    batch = collate([[5, 6], [5, 6]], [[7, 0], [8]], pad_id=0)
    tok = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)  # (B, T-1), aligned with ids[:, 1:]
    vals, valid = completion_tokens(tok, batch["completion_mask"])
    assert vals.tolist() == [[2.0, 3.0], [5.0, 0.0]] and valid.tolist() == [[True, True], [True, False]]
    vals.sum().backward()  # the gradient reaches exactly the completion tokens
    assert tok.grad.tolist() == [[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]
