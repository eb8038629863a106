"""The runtime: ar, sd and mirror are lossless, concurrent and robust, on tiny random models."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mirror_ort.errors import MirrorError
from mirror_ort.runtime.kv_cache import KVCache
from mirror_ort.runtime.pipeline import Pipeline

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time there was a little robot",
    "Translate to German: The weather",
    "Speculative decoding drafts tokens",
]


@pytest.fixture(scope="module")
def pipes(bundle_layers, bundle_self, bundle_unrelated):
    return {"layers": Pipeline.from_bundle(bundle_layers), "self": Pipeline.from_bundle(bundle_self),
            "unrelated": Pipeline.from_bundle(bundle_unrelated)}


def _ar(pipe, prompt, **kw):
    return pipe.generate(prompt, method="ar", **kw).token_ids


@pytest.fixture(scope="module")
def exactness_bundles(tmp_path_factory, target_dir, bundle_layers, tokenizer):
    """The target's three layouts at fp32 and int4: grouped attention on a positions-major cache
    (fp32; also with 4 query heads per K/V head, where Q's heads are regrouped), GroupQueryAttention
    with a padded query on a BNSH cache (int4), BSND (head size 8, either precision)."""
    from conftest import export
    from tiny_models import build_tiny_model

    out = tmp_path_factory.mktemp("exact")
    narrow = build_tiny_model(out / "narrow", "llama", layers=4, hidden=32, heads=4, kv_heads=2, tokenizer=tokenizer)
    groups = build_tiny_model(out / "groups", "llama", layers=4, hidden=128, heads=8, kv_heads=2, tokenizer=tokenizer)
    return {("BSND-shared", "fp32"): bundle_layers,
            ("BSND-shared", "fp32, groups of 4"): export(groups, out / "groups4", draft=None, validate=False).path,
            ("BNSH-shared", "int4"): export(target_dir, out / "int4", draft=None, precision="int4", validate=False).path,
            ("BSND", "fp32"): export(narrow, out / "bsnd", draft=None, validate=False).path,
            ("BSND", "int4"): export(narrow, out / "bsnd4", draft=None, precision="int4", validate=False).path}


@pytest.mark.parametrize("layout, precision", [("BSND-shared", "fp32"), ("BSND-shared", "fp32, groups of 4"),
                                               ("BNSH-shared", "int4"), ("BSND", "fp32"), ("BSND", "int4")])
def test_a_token_scored_alone_equals_it_scored_in_a_window(exactness_bundles, layout, precision):
    """Bit for bit: what target-only decoding computes for each token is what every verification
    window computes for it (runtime/target.py; one-row calls differed in the last bits)."""
    from mirror_ort.export.validate import scored_alone_and_in_windows
    from mirror_ort.runtime.stats import Stats

    pipe = Pipeline.from_bundle(exactness_bundles[layout, precision], load_draft=False)
    assert pipe.bundle.graph("prefix").kv_layout == layout
    assert pipe.fused is not None  # dynamic halves: target-only steps run the fused target
    target = pipe.target(Stats())
    # the target's own graphs keep a lone token exact (grouped attention, a padded query): one row
    assert target.min_rows == (2 if layout == "BSND" else 1)
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 384, 40)]
    # windows of 7, 1, 5, 3, 2, 6 tokens, through the fused target and through prefix + suffix
    alone, windows, split = scored_alone_and_in_windows(target, ids, prompt=16)
    assert alone.shape == windows.shape == split.shape == (24, 384)
    assert np.array_equal(alone, windows) and np.array_equal(alone, split)
    assert target.stats.seconds["target"] > 0 and target.stats.seconds["prefix"] > 0
    target.truncate(16)
    ids_alone = [int(target.score([i], greedy=True)[-1]) for i in ids[16:20]]  # the in-graph argmax too
    assert ids_alone == [int(row.argmax()) for row in alone[:4]]


def test_the_fused_target_and_the_two_halves_decode_alike(bundle_layers):
    """``fuse=False`` runs every step through prefix + suffix: the same tokens for every method,
    greedy and sampled (runtime/fused.py)."""
    fused, split = (Pipeline.from_bundle(bundle_layers, fuse=fuse) for fuse in (True, False))
    assert fused.fused is not None and split.fused is None
    for method, temperature in itertools.product(("ar", "sd", "mirror"), (0.0, 0.9)):
        kw = dict(method=method, max_new_tokens=20, gamma=3, temperature=temperature, seed=5)
        got = fused.generate(PROMPTS[1], **kw)
        assert got.token_ids == split.generate(PROMPTS[1], **kw).token_ids, (method, temperature)
        # a fixed gamma: Mirror-SD builds a tree every step, through the halves; the rest fused
        assert got.stats["seconds"]["prefix" if method == "mirror" else "target"] > 0


@pytest.mark.parametrize("name", ["layers", "self", "unrelated"])
def test_greedy_is_lossless_over_settings(pipes, name):
    pipe = pipes[name]
    for prompt in PROMPTS:
        want = _ar(pipe, prompt, max_new_tokens=24)
        assert len(want) == 24
        for method, gamma, kappa in itertools.product(("sd", "mirror"), (1, 3, 7), (1, 4, 8)):
            if method == "sd" and kappa != 8:
                continue  # kappa only shapes the mirror tree
            got = pipe.generate(prompt, method=method, max_new_tokens=24, gamma=gamma, kappa=kappa, max_branches=6)
            assert got.token_ids == want, (name, prompt, method, gamma, kappa)


REPEATING = "one two three four one two three four one two three four one two"


@pytest.mark.parametrize("name", ["layers", "self", "unrelated"])
def test_greedy_is_lossless_with_auto_windows_and_prompt_lookup(pipes, name):
    """Every window source and the window controller: still exactly ar's tokens."""
    pipe = pipes[name]
    looked = 0
    for prompt in (PROMPTS[0], PROMPTS[2], REPEATING):
        want = _ar(pipe, prompt, max_new_tokens=32)
        for method, draft in itertools.product(("sd", "mirror"), ("model", "lookup", "both")):
            got = pipe.generate(prompt, method=method, max_new_tokens=32, gamma="auto", draft=draft)
            assert got.token_ids == want, (name, prompt, method, draft)
            speculation = got.stats["speculation"]
            assert speculation["gamma"] == "auto" and speculation["draft"] == draft
            looked += len(speculation.get("lookup", {}).get("by_match", {})) > 0
        assert pipe.generate(prompt, method="sd", max_new_tokens=32, gamma=4, draft="lookup").token_ids == want
    assert looked  # the lookup controller was there


def test_mirror_builds_trees_only_where_the_draft_has_idle_cores(bundle_layers):
    """A draft sharing the target's cores has no idle time to hide a tree in: Mirror-SD then
    drafts after each verdict; with a core of its own it rolls out trees. Both stay exact."""
    from mirror_ort.providers import available_cores

    if available_cores() < 2:
        pytest.skip("needs two cores: one for the target, one for the draft")
    from mirror_ort.runtime.cost import BRANCHES, ROWS, CostCurve

    shared, split = Pipeline.from_bundle(bundle_layers), Pipeline.from_bundle(bundle_layers, target_threads=1,
                                                                                draft_threads=1)
    for pipe in (shared, split):  # a curve on which model windows pay, so that there are trees to build
        pipe.pin_cost_curve(CostCurve(list(ROWS), [10.0] * len(ROWS), 1.0, list(BRANCHES), [1.0] * len(BRANCHES),
                                      {"pinned": "test"}))
    for prompt in (PROMPTS[0], REPEATING):
        want = _ar(shared, prompt, max_new_tokens=32)
        trees = {}
        for name, pipe in (("shared", shared), ("split", split)):
            got = pipe.generate(prompt, method="mirror", max_new_tokens=32, gamma="auto", draft="both")
            assert got.token_ids == want, (name, prompt)
            trees[name] = got.stats["speculation"]
        assert trees["shared"]["mean_model_window"] > 0 and trees["split"]["mean_model_window"] > 0
        assert trees["shared"]["tree_idle_share"] == 0 and trees["shared"]["mean_branches"] == 0
        assert trees["split"]["tree_idle_share"] > 0 and trees["split"]["mean_branches"] >= 1


def test_a_bundle_without_a_draft_speculates_with_prompt_lookup(tmp_path, target_dir):
    from conftest import export

    pipe = Pipeline.from_bundle(export(target_dir, tmp_path / "b", draft="none", validate=False).path)
    want = _ar(pipe, REPEATING, max_new_tokens=32)
    for method in ("sd", "mirror"):
        result = pipe.generate(REPEATING, method=method, max_new_tokens=32)
        assert result.token_ids == want and result.stats["speculation"]["draft"] == "lookup"
    with pytest.raises(MirrorError, match="--draft model needs the bundle's draft model"):
        pipe.generate(REPEATING, method="sd", draft="model")


def test_identical_draft_takes_the_reuse_path(pipes):
    """Every window is accepted, so the next window is the bonus token's branch: found in the
    full tree whenever the bonus token is among the early-exit Top-kappa."""
    r = pipes["self"].generate(PROMPTS[0], method="mirror", max_new_tokens=41, gamma=4, max_branches=40)
    s = r.stats
    assert s["mean_accepted"] > 4  # the whole window plus the bonus token, each step
    assert s["reused_windows"] + s["fallback_windows"] == s["target_calls"] - 2  # all verify steps but the last
    assert s["reuse_rate"] >= 0.5


def test_unrelated_draft_takes_the_fallback_path(pipes):
    s = pipes["unrelated"].generate(PROMPTS[2], method="mirror", max_new_tokens=40, gamma=3, kappa=1,
                                    max_branches=1).stats
    assert s["fallback_windows"] > 0 and s["fallback_rate"] > 0


def test_stats_agree_with_what_the_generation_did(pipes):
    """Every figure follows from the counts: tokens per call from tokens and calls, steps from
    the stream, reuse and fallback from the windows, rates from the timers."""
    pipe = pipes["layers"]
    # a fixed model window: every step hands over (a lookup step would not)
    pieces = list(pipe._run(PROMPTS[1], method="mirror", max_new_tokens=16, gamma=4, draft="model"))
    s = pieces[-1][1].as_dict()
    assert s["method"] == "mirror" and s["new_tokens"] == sum(len(new) for new, _ in pieces) == 16
    assert s["target_calls"] == len(pieces)  # the prefill, then one verification step per yield
    assert s["mean_accepted"] == pytest.approx(16 / len(pieces))
    assert s["accepted_draft_tokens"] == 16 - len(pieces)  # each step adds one target token to what it accepted
    # every step but the first takes the window the step before handed over; a last step with
    # room for no draft token takes none
    taken = len(pieces) - 2 - (16 - sum(len(new) for new, _ in pieces[:-1]) == 1)
    assert s["reused_windows"] + s["fallback_windows"] == taken
    assert s["reuse_rate"] == pytest.approx(s["reused_windows"] / taken)
    assert s["tokens_per_s"] == pytest.approx(16 / s["seconds"]["total"])
    assert s["draft_tokens_per_call"] == pytest.approx(s["draft_tokens"] / s["serial_draft_calls"])
    assert s["target_ep"] == s["draft_ep"] == "CPUExecutionProvider"
    assert {"prefix", "suffix", "draft", "draft_tree", "wait", "glue"} <= set(s["seconds"])
    assert s["seconds"]["draft_tree"] > 0 and s["seconds"]["prefix"] > 0


def test_eos_inside_a_window_stops_every_method_at_the_same_token(pipes):
    pipe = pipes["self"]
    free = _ar(pipe, PROMPTS[3], max_new_tokens=30)
    eos = free[9]  # pretend the 10th generated token is the end of text
    original = pipe.bundle.manifest
    pipe.bundle.manifest = replace(original, tokenizer=replace(original.tokenizer, eos_token_ids=[eos]))
    try:
        want = _ar(pipe, PROMPTS[3], max_new_tokens=30)
        assert want[-1] == eos and len(want) <= 10
        for method in ("sd", "mirror"):
            assert pipe.generate(PROMPTS[3], method=method, max_new_tokens=30, gamma=7).token_ids == want
    finally:
        pipe.bundle.manifest = original


def test_max_length_boundary(bundle_layers):
    pipe = Pipeline.from_bundle(bundle_layers, max_length=20)
    prompt_len = len(pipe.encode(PROMPTS[0]))
    want = _ar(pipe, PROMPTS[0], max_new_tokens=100)
    assert len(want) == 20 - prompt_len
    for method in ("sd", "mirror"):
        assert pipe.generate(PROMPTS[0], method=method, max_new_tokens=100, gamma=7).token_ids == want


def test_prompt_longer_than_capacity_fails_before_work(bundle_layers):
    pipe = Pipeline.from_bundle(bundle_layers, max_length=8)
    with pytest.raises(MirrorError, match="the prompt has .* tokens but the capacity is 8"):
        pipe.generate("one two three four five six seven eight nine ten eleven")


def test_a_failing_draft_worker_finishes_with_the_target(bundle_unrelated, caplog):
    """A real failure inside the draft thread: its cache is too small for the tree."""
    pipe = Pipeline.from_bundle(bundle_unrelated)
    want = _ar(pipe, PROMPTS[0], max_new_tokens=30)
    prompt_len = len(pipe.encode(PROMPTS[0]))
    spec = pipe.draft.spec
    pipe.draft.cache = KVCache(spec.layers[1] - spec.layers[0], prompt_len + 12, spec.num_kv_heads, spec.head_dim)
    result = pipe.generate(PROMPTS[0], method="mirror", max_new_tokens=30, gamma=3)
    assert result.token_ids == want
    assert result.stats["draft_error"]  # the worker's real exception, reported
    assert [r.getMessage().count("the draft failed") for r in caplog.records if r.name == "mirror_ort"] == [1]


def test_sampling_is_reproducible_for_a_seed(pipes):
    pipe = pipes["unrelated"]
    kw = dict(max_new_tokens=20, temperature=0.9, top_p=0.95, seed=11)
    for method in ("ar", "sd", "mirror"):
        a = pipe.generate(PROMPTS[0], method=method, **kw).token_ids
        assert a == pipe.generate(PROMPTS[0], method=method, **kw).token_ids
        others = {tuple(pipe.generate(PROMPTS[0], method=method, **{**kw, "seed": seed}).token_ids) for seed in (12, 13)}
        assert others - {tuple(a)}, method  # the seed is what fixes the draws: other seeds draw other text


def _exact_distribution(pipe, prompt_ids, steps, top_k, temperature):
    """Exact probability of every top-k continuation of ``steps`` tokens, from the target itself."""
    from mirror_ort.runtime.sampling import Decoding, distribution
    from mirror_ort.runtime.stats import Stats

    decoding = Decoding(temperature, 1.0, top_k)
    own = Pipeline.from_bundle(pipe.bundle.path, load_draft=False)  # sessions of its own: pipe's caches stay intact
    target = own.target(Stats())
    probs = {}

    def walk(ids, p):
        if len(ids) - len(prompt_ids) == steps:
            probs[tuple(ids[len(prompt_ids):])] = p
            return
        target.reset()
        logits = target.score(ids, greedy=False)[-1]
        dist = distribution(logits, decoding)
        for token in np.flatnonzero(dist > 0):
            walk(ids + [int(token)], p * dist[token])

    walk(list(prompt_ids), 1.0)
    return probs


def chi_square_pvalue(counts: dict, exact: dict) -> float:
    """Chi-square goodness of fit of sampled outcome counts to exact probabilities; outcomes
    expected fewer than 5 times are pooled into one bin."""
    outcomes = sorted(exact)
    observed = np.array([counts[o] for o in outcomes])
    expected = np.array([exact[o] for o in outcomes]) * observed.sum()
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return scipy_stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue


@pytest.mark.parametrize("name", ["unrelated", "layers"])
def test_sampling_matches_the_target_distribution(pipes, name):
    """Chi-square goodness of fit of 3-token continuations against the exact target distribution.
    False-alarm rate: 1e-3 per method (the threshold on the p-value)."""
    pipe = pipes[name]
    steps, top_k, temperature, draws = 3, 3, 1.5, 600
    prompt_ids = pipe.encode(PROMPTS[4])
    exact = _exact_distribution(pipe, prompt_ids, steps, top_k, temperature)
    outcomes = sorted(exact)
    for method in ("ar", "sd", "mirror"):
        counts = dict.fromkeys(outcomes, 0)
        for seed in range(draws):
            ids = pipe.generate(prompt_ids, method=method, max_new_tokens=steps, temperature=temperature,
                                top_k=top_k, seed=1000 * (name == "layers") + seed, gamma=2).token_ids
            counts[tuple(ids)] += 1
        p_value = chi_square_pvalue(counts, exact)
        assert p_value > 1e-3, (name, method, p_value)


def _a_prompt_lookup_continues(pipe, top_k, temperature, draws):
    """A prompt after which lookup's guesses get accepted: a text, segments ``[last, x, y]`` for
    the tokens ``x`` the target may sample first (lookup then proposes ``y`` after ``x``), the
    text again. Segments change what may come first, so candidates are built in rounds and the
    one with the highest exact chance of an accepted guess at the second token is returned."""
    from mirror_ort.runtime.lookup import PromptLookup

    best, best_chance = None, 0.0
    for text in map(pipe.encode, PROMPTS):
        segments = []
        for _ in range(4):
            prompt = text + segments + text
            firsts = _exact_distribution(pipe, prompt, 1, top_k, temperature)
            chance = 0.0
            for (x,), p in firsts.items():
                guess, _ = PromptLookup().propose(prompt + [x], 1)
                if guess:
                    seconds = _exact_distribution(pipe, prompt + [x], 1, top_k, temperature)
                    chance += p * seconds.get((guess[0],), 0.0)
            if chance > best_chance:
                best, best_chance = prompt, chance
            for (x,) in firsts:
                segments += [text[-1], x, pipe.generate(prompt + [x], method="ar", max_new_tokens=1).token_ids[0]]
    assert best_chance * draws > 10, best_chance  # the test below can then expect accepted guesses
    return best


@pytest.mark.parametrize("method, draft", [("sd", "lookup"), ("sd", "both"), ("mirror", "both")])
def test_sampling_with_auto_windows_and_lookup_matches_the_target_distribution(pipes, method, draft):
    """The same goodness of fit with the window controller and prompt lookup's point-mass
    proposals. The controller reads a pinned curve where a target call costs ten draft calls
    (as for a real target beside its draft), so it does speculate; the prompt makes lookup
    propose from the second token on."""
    from mirror_ort.runtime.cost import BRANCHES, ROWS, CostCurve

    steps, top_k, temperature, draws = 3, 3, 1.5, 600
    pipe = Pipeline.from_bundle(pipes["layers"].bundle.path)
    pipe.pin_cost_curve(CostCurve(list(ROWS), [10.0] * len(ROWS), 1.0, list(BRANCHES), [1.0] * len(BRANCHES),
                                  {"pinned": "test"}))
    prompt_ids = _a_prompt_lookup_continues(pipe, top_k, temperature, draws)
    exact = _exact_distribution(pipe, prompt_ids, steps, top_k, temperature)
    counts, accepted = dict.fromkeys(sorted(exact), 0), 0
    for seed in range(draws):
        result = pipe.generate(prompt_ids, method=method, max_new_tokens=steps, temperature=temperature, top_k=top_k,
                               seed=seed, gamma="auto", draft=draft)
        counts[tuple(result.token_ids)] += 1
        accepted += result.stats["accepted_draft_tokens"]
        assert result.stats["speculation"]["cost_curve"]["measured"] == {"pinned": "test"}
    p_value = chi_square_pvalue(counts, exact)
    assert p_value > 1e-3, (method, draft, p_value)
    assert accepted  # the speculative path did run: some draft tokens were accepted


def test_sampling_test_detects_a_wrong_distribution(pipes):
    """The goodness-of-fit test above can fail: samples at another temperature are rejected."""
    pipe = pipes["layers"]
    prompt_ids = pipe.encode(PROMPTS[4])
    exact = _exact_distribution(pipe, prompt_ids, 3, 3, 1.5)
    outcomes = sorted(exact)
    counts = dict.fromkeys(outcomes, 0)
    for seed in range(600):
        ids = pipe.generate(prompt_ids, method="ar", max_new_tokens=3, temperature=0.7, top_k=3, seed=seed).token_ids
        counts[tuple(ids)] += 1
    assert chi_square_pvalue(counts, exact) < 1e-3


def test_prompt_cache_reuses_the_conversation_prefix(bundle_layers):
    """A follow-up turn recomputes only what the target caches lack, with the same output."""
    pipe = Pipeline.from_bundle(bundle_layers)
    first = pipe.generate(PROMPTS[2], method="mirror", max_new_tokens=12)
    follow_up = pipe.encode(PROMPTS[2]) + first.token_ids + pipe.encode(" and then")
    again = pipe.generate(follow_up, method="mirror", max_new_tokens=12)
    assert again.stats["cached_prompt_tokens"] > len(pipe.encode(PROMPTS[2]))
    fresh = Pipeline.from_bundle(bundle_layers).generate(follow_up, method="ar", max_new_tokens=12)
    assert again.token_ids == fresh.token_ids and fresh.stats["cached_prompt_tokens"] == 0


def test_cli_run_json_and_prompt_sources(bundle_layers, tmp_path):
    import json

    from click.testing import CliRunner

    from mirror_ort.cli import main

    runner = CliRunner()
    args = ["run", str(bundle_layers), "--max-new-tokens", "8", "--json"]
    by_flag = json.loads(runner.invoke(main, args + ["--prompt", PROMPTS[0]]).stdout)
    (tmp_path / "p.txt").write_text(PROMPTS[0])
    by_file = json.loads(runner.invoke(main, args + ["--prompt-file", str(tmp_path / "p.txt")]).stdout)
    by_stdin = json.loads(runner.invoke(main, args, input=PROMPTS[0]).stdout)
    assert by_flag["token_ids"] == by_file["token_ids"] == by_stdin["token_ids"]
    assert len(by_flag["token_ids"]) == 8 and by_flag["text"]
    stats = by_flag["stats"]
    assert stats["method"] == "mirror" and stats["new_tokens"] == 8 and stats["target_ep"] == "CPUExecutionProvider"
    assert stats["mean_accepted"] == pytest.approx(8 / stats["target_calls"])
    streamed = runner.invoke(main, ["run", str(bundle_layers), "--max-new-tokens", "8", "--method", "sd",
                                    "--prompt", PROMPTS[0]])
    assert streamed.exit_code == 0 and streamed.stdout.strip() == by_flag["text"].strip()
    assert "tokens per target call" in streamed.stderr and "reuse" not in streamed.stderr  # sd builds no tree
    mirrored = runner.invoke(main, ["run", str(bundle_layers), "--max-new-tokens", "8", "--prompt", PROMPTS[0]])
    assert "no draft tree (the draft shares the target's cores)" in mirrored.stderr  # default threads: shared
    chat = runner.invoke(main, args + ["--chat", "--prompt", PROMPTS[0]])
    assert chat.exit_code == 0 and json.loads(chat.stdout)["token_ids"] != by_flag["token_ids"]
