import dataclasses

import numpy as np
import pytest
import torch

import alignment.steps.decode as D
import alignment.steps.sampling as S
import alignment.base.machine as machine
from alignment.config import SampleConfig
from alignment.base.io import read_jsonl
from alignment.steps.logprobs import batched_logps
from alignment.assets.models import load_causal_lm, load_tokenizer, stop_token_ids

PROMPTS = [[52, 72, 265, 285], [80, 81], [100, 120, 140, 160, 180, 200, 220], [7]]
STOPS_MANY = list(range(0, 400, 10))  # 40 of 400 ids: sequences stop at varied steps


def _keys(n: int, seed: int = 0, n_prompts: int = len(PROMPTS)) -> np.ndarray:
    """Row keys (`decode.row_keys`) of n samples of prompts "0", "1", ...: (n_prompts * n,) uint64."""
    return D.row_keys(seed, [str(i) for i in range(n_prompts)], n)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request, tiny_gpt2_dir, tiny_llama_dir):
    path = {"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[request.param]
    return load_causal_lm(path, torch.float32, torch.device("cpu"))


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir):
    return load_causal_lm(tiny_gpt2_dir, torch.float32, torch.device("cpu"))


@pytest.fixture(scope="module")
def tok(tiny_gpt2_dir):
    return load_tokenizer(tiny_gpt2_dir)


# ---- pure helpers


def test_left_pad_docstring_example():
    ids, mask = D.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert torch.equal(ids, torch.tensor([[5, 6, 7], [0, 0, 8]]))
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [0, 0, 1]]))
    ids, mask = D.left_pad([[1], [2]], pad_id=9)
    assert torch.equal(ids, torch.tensor([[1], [2]])) and mask.all()


def test_uniforms_are_splitmix64_and_uniform():
    """Step t of key k is the (t+1)-th splitmix64 output of the stream seeded with k, cut to 24 bits: key
    0 gives the reference stream's first outputs (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4); 20,000 keys
    fill [0, 1) evenly, in float32 and never 1; each key and step its own number."""
    assert D.uniforms(np.array([0], dtype=np.uint64), 0)[0] == (0xE220A8397B1DCDAF >> 40) / 2 ** 24
    assert D.uniforms(np.array([0], dtype=np.uint64), 1)[0] == (0x6E789E6AA1B965F4 >> 40) / 2 ** 24
    u = D.uniforms(np.arange(20_000, dtype=np.uint64), 3)
    assert u.dtype == np.float32 and 0.0 <= u.min() and u.max() < 1.0
    assert np.allclose(np.histogram(u, bins=10, range=(0, 1))[0] / 20_000, 0.1, atol=0.01)
    assert abs(np.corrcoef(u, D.uniforms(np.arange(20_000, dtype=np.uint64), 4))[0, 1]) < 0.03  # steps independent
    assert len(set(u.tolist())) > 19_900


def test_row_keys_are_prompt_major_and_depend_on_seed_prompt_and_sample():
    keys = D.row_keys(3, ["a", "b"], 2)
    assert keys.dtype == np.uint64 and len(set(keys.tolist())) == 4
    assert keys.tolist() == D.row_keys(3, ["a"], 2).tolist() + D.row_keys(3, ["b"], 2).tolist()  # [a a b b]
    assert keys[1] == D.row_keys(3, ["a"], 2)[1] and D.row_keys(4, ["a"], 1)[0] != keys[0]


def test_categorical_matches_probs():
    probs = torch.tensor([0.1, 0.2, 0.7]).expand(20_000, 3)
    draws = D.categorical(probs, torch.from_numpy(D.uniforms(np.arange(20_000, dtype=np.uint64), 0)))
    assert draws.shape == (20_000,) and draws.dtype == torch.long
    freq = torch.bincount(draws, minlength=3).float() / 20_000
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.7]), atol=0.01), freq


def test_categorical_is_the_inverse_cdf_at_u_and_never_draws_zero_mass():
    """Unnormalised, zeros inside and at both ends: u x total falls in a token's step of the CDF
    [0, 2, 2, 8, 8]; u = 0 takes the first token with mass; u just below 1 (or a total that rounding
    reaches) the last one with mass, never the zero-mass tail."""
    probs = torch.tensor([0.0, 2.0, 0.0, 6.0, 0.0])
    u = torch.tensor([0.0, 0.2, 0.25, 0.26, 0.9, 1.0 - 2.0 ** -24, 1.0])
    assert D.categorical(probs.expand(len(u), 5), u).tolist() == [1, 1, 3, 3, 3, 3, 3]
    onehot = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert D.categorical(onehot, torch.tensor([0.5, 0.99])).tolist() == [2, 0]


def test_filter_logits_top_k():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
    out = D.filter_logits(logits, top_k=2)
    inf = float("-inf")
    assert torch.equal(out, torch.tensor([[inf, 3.0, 2.0, inf], [4.0, 3.0, inf, inf]]))
    assert torch.equal(D.filter_logits(logits, top_k=0), logits)
    assert torch.equal(D.filter_logits(logits, top_k=10), logits)  # k > V keeps all


def test_filter_logits_top_p():
    p = torch.tensor([[0.15, 0.5, 0.05, 0.3], [0.25, 0.25, 0.25, 0.25]])
    logits = p.log()
    # row 0 sorted: 0.5 (idx1), 0.3 (idx3), 0.15 (idx0), 0.05 (idx2); mass before: 0, .5, .8, .95
    keep = lambda out: torch.isfinite(out).tolist()  # noqa: E731
    assert keep(D.filter_logits(logits, top_p=0.4))[0] == [False, True, False, False]
    assert keep(D.filter_logits(logits, top_p=0.6))[0] == [False, True, False, True]
    assert keep(D.filter_logits(logits, top_p=0.85))[0] == [True, True, False, True]
    assert keep(D.filter_logits(logits, top_p=1.0))[0] == [True] * 4
    # uniform row: top_p=0.6 keeps 3 of 4 (mass before the 3rd is 0.5 < 0.6)
    assert sum(keep(D.filter_logits(logits, top_p=0.6))[1]) == 3
    # kept entries keep their values; combined with top_k
    out = D.filter_logits(logits, top_k=1, top_p=0.85)
    assert keep(out)[0] == [False, True, False, False] and out[0, 1] == logits[0, 1]


# ---- sample_batch on real (tiny) models


def test_sample_batch_shapes_and_stops(lm):
    cfg = SampleConfig(max_new_tokens=12)
    out = D.sample_batch(lm, PROMPTS, 3, cfg, STOPS_MANY, 0, _keys(3))
    assert len(out) == len(PROMPTS) * 3
    assert all(1 <= len(c) <= 12 for c in out)
    stops = set(STOPS_MANY)
    for c in out:
        assert not stops & set(c[:-1])  # a stop id only ever ends a list
        assert len(c) == 12 or c[-1] in stops
    assert any(c[-1] in stops for c in out) and any(len(c) < 12 for c in out)
    short = D.sample_batch(lm, PROMPTS, 2, cfg, STOPS_MANY, 0, _keys(2), max_new_tokens=3)  # overrides cfg
    assert len(short) == 8 and all(1 <= len(c) <= 3 for c in short)


def test_kv_cache_step_distributions_equal_full_forward(lm, monkeypatch):
    """Every per-step distribution the sampler draws from (KV cache, left padding, rows dropped
    as they finish) equals softmax of a full unpadded forward over prompt + tokens so far."""
    seen = []
    real = D.categorical

    def spy(probs, u):
        seen.append(probs.clone())
        return real(probs, u)

    monkeypatch.setattr(D, "categorical", spy)
    n, cfg = 3, SampleConfig(max_new_tokens=10, temperature=0.7)
    comps = D.sample_batch(lm, PROMPTS, n, cfg, STOPS_MANY, 0, _keys(n, 3))
    assert len(seen) == max(len(c) for c in comps)
    expected = {}
    with torch.no_grad():
        for i, c in enumerate(comps):
            p = PROMPTS[i // n]
            ids = torch.tensor([p + c])
            logits = lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]  # (T, V)
            expected[i] = torch.softmax(logits[len(p) - 1 : len(p) - 1 + len(c)] / 0.7, -1)
    for t, probs in enumerate(seen):
        active = [i for i, c in enumerate(comps) if len(c) > t]
        assert probs.shape == (len(active), lm.config.vocab_size)
        for r, i in enumerate(active):
            assert torch.allclose(probs[r], expected[i][t], atol=1e-5), (t, i)
    # sum of the sampler's own log-probs == alignment.steps.logprobs full-forward log-prob (temperature 1)
    seen.clear()
    cfg1 = SampleConfig(max_new_tokens=8)
    comps = D.sample_batch(lm, PROMPTS, 2, cfg1, STOPS_MANY, 0, _keys(2, 4))
    own = torch.zeros(len(comps))
    for t, probs in enumerate(seen):
        active = [i for i, c in enumerate(comps) if len(c) > t]
        for r, i in enumerate(active):
            own[i] += probs[r, comps[i][t]].log()
    full = batched_logps(lm, [PROMPTS[i // 2] for i in range(len(comps))], comps, 0)
    assert torch.isfinite(full).all()
    assert torch.allclose(own, full, atol=1e-4)


def test_greedy_matches_hf_generate(lm):
    cfg = SampleConfig(max_new_tokens=10, temperature=1e-4)
    ours = D.sample_batch(lm, PROMPTS, 2, cfg, [0], 0, _keys(2))
    ids, mask = D.left_pad(PROMPTS, 0)
    with torch.no_grad():
        gen = lm.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10,
                          pad_token_id=0, eos_token_id=0)
    for j, row in enumerate(gen[:, ids.size(1):].tolist()):
        cut = row[: row.index(0) + 1] if 0 in row else row
        assert ours[2 * j] == cut and ours[2 * j + 1] == cut, j
    # prompts of different lengths really produced different continuations
    assert len({tuple(c) for c in ours}) > 1


def test_first_token_distribution(gpt2):
    prompt = [PROMPTS[0]]
    with torch.no_grad():
        logits = gpt2(input_ids=torch.tensor(prompt)).logits[0, -1]

    def tv(cfg, n=3000, seed=0):
        draws = D.sample_batch(gpt2, prompt, n, cfg, [0], 0, _keys(n, seed, 1), 1)
        emp = torch.bincount(torch.tensor([c[0] for c in draws]), minlength=logits.numel()).float() / n
        target = torch.softmax(D.filter_logits(logits[None] / cfg.temperature, cfg.top_k, cfg.top_p)[0], -1)
        return 0.5 * (emp - target).abs().sum().item(), target

    # top-k 10: few outcomes, so 3000 draws pin the distribution down to TV < 0.05
    d, target = tv(SampleConfig(top_k=10))
    assert d < 0.05, d
    d, _ = tv(SampleConfig(top_p=0.05, temperature=0.5))
    assert d < 0.05, d
    # pure sampling over the whole vocab: TV is dominated by sampling noise; compare with the
    # noise floor of torch.multinomial draws from the exact softmax
    d, target = tv(SampleConfig())
    g = torch.Generator().manual_seed(1)
    floor = sum(0.5 * (torch.bincount(torch.multinomial(target, 3000, True, generator=g),
                                      minlength=target.numel()).float() / 3000 - target).abs().sum().item()
                for _ in range(5)) / 5
    assert d < floor + 0.03, (d, floor)


# ---- records, files, resume


def _prompt_records(tok):
    texts = ["This movie was", "I hated", "What a wonderful surprise", "Boring"]
    return [{"id": f"p{i}", "text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]}
            for i, t in enumerate(texts)]


def test_sample_records_fields_and_reproducible(gpt2, tok):
    prompts = _prompt_records(tok)
    cfg = SampleConfig(max_new_tokens=6, batch_size=6, seed=5)
    stops = stop_token_ids(tok, gpt2) + STOPS_MANY[1:]
    run = lambda c: [r for b in S.sample_records(gpt2, tok, prompts, 3, c, stops) for r in b]  # noqa: E731
    a, b = run(cfg), run(cfg)
    assert a == b
    assert run(dataclasses.replace(cfg, seed=6)) != a
    assert len(a) == 12
    assert sorted((r["prompt_id"], r["sample"]) for r in a) == [(f"p{i}", j) for i in range(4) for j in range(3)]
    for r in a:
        c = r["completion_ids"]
        assert r["finished"] == (c[-1] in stops)
        body = c[:-1] if r["finished"] else c
        assert r["completion"] == tok.decode(body, skip_special_tokens=True)
        assert r["prompt"] == prompts[int(r["prompt_id"][1])]["text"]
    done = {"p0", "p2"}
    rest = [r for b in S.sample_records(gpt2, tok, prompts, 3, cfg, stops, done=done) for r in b]
    assert {r["prompt_id"] for r in rest} == {"p1", "p3"}


def test_sample_to_file_resume_is_exact(gpt2, tok, tmp_path, monkeypatch):
    prompts = _prompt_records(tok)
    n = 3
    cfg = SampleConfig(max_new_tokens=8, batch_size=n, seed=11)  # one prompt per batch
    stops = stop_token_ids(tok, gpt2)
    full = S.sample_to_file(tmp_path / "a.jsonl", gpt2, tok, prompts, n, cfg, stops)
    assert [(r["prompt_id"], r["sample"]) for r in full] == [(f"p{i}", j) for i in range(4) for j in range(n)]
    reference = (tmp_path / "a.jsonl").read_bytes()

    # interrupted run: first batch's records plus half of the next line survive
    path = tmp_path / "b.jsonl"
    S.sample_to_file(path, gpt2, tok, prompts, n, cfg, stops)
    lines = path.read_bytes().splitlines(keepends=True)
    first = [read_jsonl(tmp_path / "a.jsonl")[i]["prompt_id"] for i in range(n)]
    assert len(set(first)) == 1
    path.write_bytes(b"".join(lines[:n]) + lines[n][: len(lines[n]) // 2])

    calls = []
    real = D.draw_batch

    def counting(model, batch_prompts, *a, **k):
        calls.append([list(p) for p in batch_prompts])
        return real(model, batch_prompts, *a, **k)

    monkeypatch.setattr(D, "draw_batch", counting)
    resumed = S.sample_to_file(path, gpt2, tok, prompts, n, cfg, stops)
    assert len(calls) == 3  # only the 3 missing prompts were sampled
    done_ids = next(p["ids"] for p in prompts if p["id"] == first[0])
    assert done_ids not in [c[0] for c in calls]
    assert path.read_bytes() == reference
    assert resumed == full
    # nothing left to do: a rerun samples nothing
    calls.clear()
    assert S.sample_to_file(path, gpt2, tok, prompts, n, cfg, stops) == full and calls == []


def test_generate_backend(gpt2, tok):
    prompts = _prompt_records(tok)
    cfg = SampleConfig(max_new_tokens=5, batch_size=8, backend="generate", seed=0)
    stops = stop_token_ids(tok, gpt2)
    recs = [r for b in S.sample_records(gpt2, tok, prompts, 2, cfg, stops) for r in b]
    assert len(recs) == 8
    assert sorted((r["prompt_id"], r["sample"]) for r in recs) == [(f"p{i}", j) for i in range(4) for j in range(2)]
    for r in recs:
        c = r["completion_ids"]
        assert 1 <= len(c) <= 5
        assert not set(stops) & set(c[:-1])
        assert r["finished"] == (c[-1] in stops)


def test_a_sampler_backend_is_a_module_with_draw(gpt2, tok, monkeypatch):
    """The seam: `sample.backend` names a module in `SAMPLERS` whose `draw` returns `Draws`; its
    batches, row keys and records come from `sample_records` (what a new backend plugs into)."""
    calls = []

    class Echo:  # a toy backend: every sample repeats its prompt's first token, then stops
        @staticmethod
        def draw(model, tokenizer, prompts, n, cfg, stop_ids, keys, max_new_tokens):
            calls.append((len(prompts), n, max_new_tokens, tuple(keys.tolist())))
            rows = [[p[0], stop_ids[0]] for p in prompts for _ in range(n)]
            return D.Draws(rows, [[-1.0, -2.0]] * len(rows), [0.5] * len(rows))

    monkeypatch.setitem(S.SAMPLERS, "fast", Echo)
    prompts, stops = _prompt_records(tok), stop_token_ids(tok, gpt2)
    cfg = SampleConfig(max_new_tokens=5, batch_size=4, seed=3)
    recs = [r for b in S.sample_records(gpt2, tok, prompts, 2, cfg, stops) for r in b]
    assert [c[:3] for c in calls] == [(2, 2, 5), (2, 2, 5)]  # 4 prompts, 2 per batch of 4 sequences
    # a key per completion: its own (seed 3, prompt id, sample index), whichever batch it fell in
    assert sum(len(c[3]) for c in calls) == 8 and len({k for c in calls for k in c[3]}) == 8
    assert set(calls[0][3]) | set(calls[1][3]) == set(D.row_keys(3, [p["id"] for p in prompts], 2).tolist())
    by_id = {p["id"]: p for p in prompts}
    assert all(r["completion_ids"] == [by_id[r["prompt_id"]]["ids"][0], stops[0]] and r["finished"] for r in recs)
    assert all(r["sample_logps"] == [-1.0, -2.0] and r["sample_entropy"] == 0.5 for r in recs)


def test_the_generate_backend_draws_what_the_fast_decoder_draws(lm, tok, monkeypatch):
    """HF `generate` with `CounterDraw` and our KV-cache decoder, both fp32 on the same tiny model (logits
    equal to ~1e-6), draw the same tokens row for row, with temperature and top-p on, also where the model's
    own generation config asks for a repetition penalty and a minimum length (not applied); the global
    generator's state before does not matter and is as the caller left it; no per-token log-probs."""
    monkeypatch.setattr(lm.generation_config, "repetition_penalty", 3.0)
    monkeypatch.setattr(lm.generation_config, "min_new_tokens", 9)
    prompts = [{"id": f"q{i}", "text": "", "ids": p} for i, p in enumerate(PROMPTS)]
    cfg = SampleConfig(max_new_tokens=10, batch_size=64, seed=4, temperature=0.8, top_p=0.95)

    def run(backend, global_seed):
        torch.manual_seed(global_seed)
        c = dataclasses.replace(cfg, backend=backend)
        recs = [r for b in S.sample_records(lm, tok, prompts, 3, c, STOPS_MANY) for r in b]
        return {(r["prompt_id"], r["sample"]): r["completion_ids"] for r in recs}, torch.rand(1).item(), recs

    ours, _, _ = run("fast", 0)
    theirs, after, recs = run("generate", 1)
    assert theirs == ours and len(ours) == 12
    assert any(len(c) < 10 for c in ours.values()) and len({tuple(c) for c in ours.values()}) == 12
    assert run("generate", 2)[0] == theirs
    torch.manual_seed(1)
    assert after == torch.rand(1).item()  # the caller's global generator is as the caller left it
    assert all("sample_logps" not in r for r in recs)


def test_draws_do_not_depend_on_batch_size_prompt_order_or_process(gpt2, tok):
    """The same config draws the same completion for each (prompt, sample) at batch sizes 1, 7 and 64 (1,
    2 and 21 prompts per batch), with the prompts reversed, and split in two halves as two processes
    would (each rank samples its own batches); another seed draws otherwise."""
    prompts = [{"id": f"r{i}", "text": "", "ids": PROMPTS[i % 4][: 1 + i % 3] + [i]} for i in range(9)]
    cfg = SampleConfig(max_new_tokens=8, seed=2)

    def run(c, ps):
        return {(r["prompt_id"], r["sample"]): r["completion_ids"]
                for b in S.sample_records(gpt2, tok, ps, 3, c, STOPS_MANY) for r in b}

    base = run(dataclasses.replace(cfg, batch_size=64), prompts)
    assert len(base) == 27 and len({tuple(c) for c in base.values()}) > 20
    for bs in (1, 7):
        assert run(dataclasses.replace(cfg, batch_size=bs), prompts) == base, bs
    assert run(dataclasses.replace(cfg, batch_size=7), prompts[::-1]) == base
    assert {**run(cfg, prompts[:4]), **run(cfg, prompts[4:])} == base
    assert run(dataclasses.replace(cfg, seed=3), prompts) != base


# ---- the automatic decode batch


def test_decode_row_bytes_worked_example_for_llama_and_gpt2_configs():
    from types import SimpleNamespace

    from alignment.base.machine import LOGIT_COPIES, decode_row_bytes
    smol = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                           head_dim=64, vocab_size=49_152)
    assert decode_row_bytes(smol, 56, 2) == 2 * 30 * 3 * 64 * 56 * 2 + LOGIT_COPIES * 49_152 * 4 == 2_469_888
    gpt2 = SimpleNamespace(n_layer=12, n_head=12, n_embd=768, vocab_size=50_257)  # no KV grouping: 12 KV heads of 64
    assert decode_row_bytes(gpt2, 56, 4) == 2 * 12 * 12 * 64 * 56 * 4 + LOGIT_COPIES * 50_257 * 4


def test_auto_decode_rows_from_a_mocked_free_memory_figure():
    """On CUDA: 60 % of the free bytes over the per-sequence bytes, capped; on a CPU, or a GPU whose free
    memory cannot be read, the CPU's 64 with a message; never 0."""
    from types import SimpleNamespace

    from alignment.base.machine import CPU_DECODE_ROWS, MAX_DECODE_ROWS, auto_decode_rows, decode_row_bytes
    smol = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                           head_dim=64, vocab_size=49_152)
    per_row = decode_row_bytes(smol, 56, 2)
    rows, why = auto_decode_rows(smol, 2, "cuda", 56, 8 * 2**30)
    assert rows == int(0.6 * 8 * 2**30) // per_row == 2086 and "8.0 GiB free" in why
    assert auto_decode_rows(smol, 2, "cuda", 56, 80 * 2**30)[0] == MAX_DECODE_ROWS
    assert auto_decode_rows(smol, 2, "cuda", 56, 1000)[0] == 1
    rows, why = auto_decode_rows(smol, 2, "cuda", 56, None)
    assert rows == CPU_DECODE_ROWS and "free memory is unknown" in why and "sample.batch_size" in why
    assert auto_decode_rows(smol, 2, "cpu", 56, None) == (CPU_DECODE_ROWS, "64 sequences (the cpu default)")


def test_auto_batch_size_samples_what_a_fixed_one_does(gpt2, tok, capsys, monkeypatch):
    """sample.batch_size=0 on a CPU decodes 64 at a time, says so once, and draws what any fixed size draws."""
    monkeypatch.setattr(machine, "_SAID", set())
    prompts = _prompt_records(tok)
    cfg = SampleConfig(max_new_tokens=6, batch_size=0, seed=1)
    auto = [r for b in S.sample_records(gpt2, tok, prompts, 2, cfg, STOPS_MANY) for r in b]
    [r for b in S.sample_records(gpt2, tok, prompts, 2, cfg, STOPS_MANY) for r in b]
    assert capsys.readouterr().out.count("sample.batch_size=0 (auto): 64 sequences") == 1  # once per process
    fixed = [r for b in S.sample_records(gpt2, tok, prompts, 2, dataclasses.replace(cfg, batch_size=2), STOPS_MANY)
             for r in b]
    tokens = lambda recs: {(r["prompt_id"], r["sample"]): r["completion_ids"] for r in recs}  # noqa: E731
    assert tokens(auto) == tokens(fixed) and len(tokens(auto)) == 8 and S.decode_rows(gpt2, cfg, prompts, 6) == 64


def test_forward_row_bytes_worked_example_and_auto_forward_rows(monkeypatch, capsys):
    """The docstring's GPT-2 example; an encoder (no vocabulary term); on a (mocked) GPU 40 % of the free
    memory over the row's bytes, capped, announced once; a CPU model gets its fixed rows silently."""
    from types import SimpleNamespace

    gpt2 = SimpleNamespace(n_layer=12, n_head=12, n_embd=768, n_inner=None, vocab_size=50_257)
    assert machine.forward_row_bytes(gpt2, 56, 4, vocab=True) == 36_138_144
    bert = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_attention_heads=12, vocab_size=30_522)
    assert machine.forward_row_bytes(bert, 128, 2, vocab=False) == 128 * (8 * 384 + 1536) * 2 + 2 * 12 * 128 ** 2 * 2
    monkeypatch.setattr(machine, "_SAID", set())
    monkeypatch.setattr(machine, "free_device_memory", lambda device: 8 * 2**30)
    param = SimpleNamespace(device=torch.device("cuda"), element_size=lambda: 4)
    fake = SimpleNamespace(config=gpt2, parameters=lambda: iter([param]))
    rows = machine.auto_forward_rows(fake, 56, "reference log-probs batch", vocab=True)
    assert rows == int(0.4 * 8 * 2**30) // 36_138_144 == 95
    machine.auto_forward_rows(fake, 56, "reference log-probs batch", vocab=True)
    out = capsys.readouterr().out
    assert out.count("reference log-probs batch (auto): 95 sequences (40% of 8.0 GiB free") == 1, out
    monkeypatch.setattr(machine, "free_device_memory", lambda device: None)
    assert machine.auto_forward_rows(fake, 56, "x", vocab=True, hint="set x") == machine.CPU_FORWARD_ROWS
    assert "free memory is unknown; set x" in capsys.readouterr().out
    monkeypatch.setattr(machine, "free_device_memory", lambda device: 2**50)
    assert machine.auto_forward_rows(fake, 56, "x", vocab=True) == machine.MAX_FORWARD_ROWS
    assert "x (auto): 1024 sequences" in capsys.readouterr().out
    assert machine.forward_row_bytes(gpt2, 56, 4, vocab=True, copies=10) == 2_365_440 + 10 * 56 * 50_257 * 4
    assert machine.forward_row_bytes(SimpleNamespace(vocab_size=10), 4, 4, vocab=False) == 1  # no width, no heads
    cpu = SimpleNamespace(config=gpt2, parameters=lambda: iter([torch.zeros(1)]))
    assert machine.auto_forward_rows(cpu, 56, "x", vocab=True, cpu_rows=16) == 16 and capsys.readouterr().out == ""


def test_a_backend_that_takes_a_model_reference_gets_one_only_for_saved_weights(tiny_gpt2_dir, capsys, monkeypatch):
    """`TAKES_REF` backends receive the `ModelRef` of a frozen loaded model (the absolute path it came from, its
    dtype; a copy cast from fp32 keeps it with the new dtype); a model with no saved copy (loaded to train, or
    cast from a rounded dtype) is drawn in-process by the fast backend instead, said once."""
    from pathlib import Path
    from types import SimpleNamespace

    from alignment.assets.models import ModelRef, cast_model, load_causal_lm

    monkeypatch.setattr(machine, "_SAID", set())
    ref_backend = SimpleNamespace(TAKES_REF=True)
    frozen = load_causal_lm(tiny_gpt2_dir, device=torch.device("cpu"))
    assert S.draw_source(ref_backend, frozen, "x") == (ref_backend, ModelRef(str(Path(tiny_gpt2_dir).resolve()), "", "float32"))
    half = cast_model(frozen, torch.bfloat16)
    assert S.draw_source(ref_backend, half, "x")[1].dtype == "bfloat16"
    fast = S.backend("fast")
    assert S.draw_source(fast, frozen, "fast") == (fast, frozen)  # in-process backends get the model
    training = load_causal_lm(tiny_gpt2_dir, device=torch.device("cpu"), train=True)
    for no_copy in (training, cast_model(half, torch.float32)):
        mod, source = S.draw_source(ref_backend, no_copy, "x")
        assert mod is D and source is no_copy
    out = capsys.readouterr().out
    assert out.count("sample.backend=x: a model with no saved copy to load (a policy while it trains)") == 1, out
