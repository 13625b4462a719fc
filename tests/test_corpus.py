"""The corpora's deduplication and role partition (`alignment.assets.corpus`), and the human row's
continuations (`evaluate.human_records`): hand-made cases, then the real bundled data."""
import random

from alignment.assets.corpus import (REVIEW_ROLES, SNIPPET_ROLES, bucket, dedupe, fragment, labelled_snippets, normalize,
                              role, snippets_by_role, topic_texts)


def test_normalize_merges_case_punctuation_and_spacing():
    assert normalize("It's  GOOD, really!") == "it s good really"
    assert normalize("co-writer/director J.R.R. Tolkien") == normalize("co writer / director j . r . r . tolkien")
    assert normalize("''Conan''") == normalize('" conan "') == "conan"


def test_dedupe_keeps_one_copy_and_drops_conflicting_labels():
    rows = [("A fine film.", 1, "vader"), ("a FINE film", 1, "rt"),      # same text twice: one kept
            ("Dull, dull.", 0, "rt"), ("dull dull", 1, "vader"),          # both labels: dropped
            ("!!!", 1, "rt"), ("Great cast", 1, "rt")]                    # normalises to nothing: dropped
    out, stats = dedupe(rows)
    assert [(s.text, s.label, s.source) for s in out] == [("A fine film.", 1, "vader"), ("Great cast", 1, "rt")]
    assert stats == {"rows": 6, "unique": 3, "conflicting": 1, "kept": 2}


def test_roles_are_fixed_by_the_normalised_text():
    rng = random.Random(0)
    texts = [" ".join(rng.choice("abcdefgh") * 3 for _ in range(5)) for _ in range(2000)]
    for t in texts[:50]:  # the same text in another spelling lands in the same role
        assert role(t) == role(t.upper() + " !")
    counts = {name: sum(role(t) == name for t in texts) for name, _ in SNIPPET_ROLES}
    assert abs(counts["reward"] / 2000 - 0.4) < 0.05 and abs(counts["policy"] / 2000 - 0.1) < 0.03
    assert all(0 <= bucket(t) < 1 for t in texts[:50])
    assert {role(t, REVIEW_ROLES) for t in texts} == {"policy", "topic"}


def test_fragment_is_a_run_of_words():
    rng = random.Random(1)
    text = " ".join(f"w{i}" for i in range(100))
    for _ in range(20):
        f = fragment(text, rng).split()
        assert 6 <= len(f) <= 30 and text.find(" ".join(f)) >= 0
    assert fragment("short one", rng) == "short one"


# ---- the real bundled corpora -------------------------------------------------------------------
def test_real_snippets_are_deduplicated_and_roles_disjoint(real_corpora):
    snippets, stats = labelled_snippets()
    keys = [normalize(s.text) for s in snippets]
    assert len(keys) == len(set(keys)) == stats["kept"] > 10_000  # one copy of each text
    assert stats["rows"] > 2 * stats["unique"] and stats["conflicting"] > 0  # the overlap really was there
    roles = {k: {normalize(s.text) for s in v} for k, v in snippets_by_role().items()}
    assert not roles["reward"] & roles["test"] and not roles["judge"] & roles["test"]
    assert not roles["reward"] & roles["judge"]  # proxy and judge never share a training text
    assert min(len(v) for v in roles.values()) > 1000


def test_real_prompt_sources_never_train_a_scorer(real_corpora):
    from alignment.assets.corpus import offline_full_reviews, offline_reviews

    scorer_texts = {normalize(s.text) for k, v in snippets_by_role().items() if k != "policy" for s in v}
    pool = offline_reviews()
    assert len(pool) > 2000 and not scorer_texts & {normalize(r.text) for r in pool}
    topic_reviews = {r.text for r in offline_full_reviews() if role(r.text, REVIEW_ROLES) == "topic"}
    assert topic_reviews and not topic_reviews & {r.text for r in pool}
    topic = topic_texts()
    pool_text = " | ".join(normalize(r.text) for r in pool)
    positives = [t for t, label in topic["train"] + topic["test"] if label == 1]
    # no movie fragment of the topic judge comes from the pool (>= 10 words: short phrases such as
    # "Out of this world." occur inside unrelated reviews)
    sample = random.Random(0).sample([t for t in positives if len(t.split()) >= 10], 400)
    assert sum(normalize(t) in pool_text for t in sample) == 0
    assert sum(normalize(" ".join(r.text.split()[:12])) in " | ".join(normalize(t) for t in positives)
               for r in pool[:50]) == 0
    assert abs(sum(l for _, l in topic["train"]) / len(topic["train"]) - 0.5) < 0.05  # balanced


def test_every_offline_preset_fits_the_prompt_pool(real_corpora):
    """Each preset's prompt counts fit the offline pools after its length filter (the pools are
    fixed shares of the policy role, so a preset asking for more would fail at the prompts stage)."""
    from alignment.config import load_config
    from alignment.steps.data import filter_reviews, review_pools
    from alignment.presets import PRESETS

    for name in PRESETS:
        d = load_config(preset=name).data
        if d.source != "offline":
            continue
        pools = review_pools(d)
        assert len(filter_reviews(pools["eval"], d)) >= d.n_eval_prompts, name
        assert len(filter_reviews(pools["train"], d)) >= 1.05 * d.n_train_prompts, name  # room for dropped duplicates
