"""Distillation on a tiny random target: training helps, checkpoints round-trip, export keeps parity."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import export
from safetensors import safe_open

from mirror_ort.chat import chat_encoder
from mirror_ort.distill.cli import distill
from mirror_ort.distill.data import DataEngine, DataOptions, target_identity
from mirror_ort.distill.evaluate import Matches, replay, summarize
from mirror_ort.distill.train import Trainer, TrainOptions, forward_losses, make_batch
from mirror_ort.distill.vocab import draft_index, reduced_vocabulary
from mirror_ort.errors import MirrorError
from mirror_ort.export.draft_dir import (
    DraftShape,
    draft_from_target,
    load_draft,
    save_draft,
    trainable_state,
)
from mirror_ort.export.sources import load_source
from mirror_ort.runtime.masks import causal_mask

SHAPE = DraftShape(layers=1, streams=2, stream_intermediate=32)
DRAFT_VOCAB = 200


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and spinning threads crawl on a busy machine (40x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def source(target_dir):
    return load_source(str(target_dir))


EXIT_LAYER = 2  # of the tiny target's 4


def engine(source, directory, seed=0, **options):
    options = DataOptions(**{"samples_per_prompt": 1, "max_new_tokens": 16, "batch_size": 32, "self_written": 0,
                             "exit_layer": EXIT_LAYER, **options})
    tokenizer = source.tokenizer
    return DataEngine(directory, source.model, chat_encoder(tokenizer), tokenizer.decode, {tokenizer.eos_token_id},
                      target_identity(source.model), options, seed=seed, log=lambda m: None)


@pytest.fixture(scope="module")
def dataset(source, tmp_path_factory):
    return engine(source, tmp_path_factory.mktemp("data")).run(max_tokens=3000)


@pytest.fixture(scope="module")
def data(dataset):
    return dataset.continuations


@pytest.fixture(scope="module")
def vocab_map(source, data):
    return reduced_vocabulary(data, DRAFT_VOCAB, source.model.config.vocab_size, [source.tokenizer.eos_token_id])


def _assert_safetensors(path):
    """The whole file is a safetensors header plus raw tensor bytes: nothing a loader would unpickle."""
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_length])
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    assert ends and 8 + header_length + max(ends) == len(data)
    assert b"\x80\x04" not in data[:8 + header_length] and not data.startswith(b"PK")  # no pickle, no zip


def fresh_draft(source, vocab_map, seed=0):
    torch.manual_seed(seed)
    return draft_from_target(source.model, SHAPE, vocab_map)


def trainer_for(draft, data, vocab_map, work, **options):
    options = TrainOptions(**{"minutes": 5, "lr": 3e-3, "batch_size": 8, "bf16": False, **options})
    return Trainer(draft, data, draft_index(vocab_map, 384), options, seed=0, work_dir=work)


def test_data_holds_the_targets_greedy_continuations(source, data):
    greedy = [c for c in data if c.greedy]
    assert greedy and len(data) > len(greedy)
    for c in greedy:
        assert c.topk_ids.shape == (len(c.tokens) - c.prompt_length, 16)
        assert torch.equal(c.topk_ids[:, 0], c.tokens[c.prompt_length:])  # greedy = the top-1 at each step
        assert torch.all(c.topk_logprobs[:, :-1] >= c.topk_logprobs[:, 1:])
    with torch.no_grad():  # the stored distribution is the target's own
        c = greedy[0]
        logp = torch.log_softmax(source.model(c.tokens[None]).logits[0, c.prompt_length - 1:-1], -1)
    assert torch.allclose(logp.gather(1, c.topk_ids), c.topk_logprobs, atol=2e-2)


def test_shards_round_trip_and_a_run_resumes_where_it_stopped(source, dataset, tmp_path):
    """Shards reload to the same continuations; a second run with a larger budget keeps the
    shards it finds and only adds more; the same budget again generates nothing."""
    from mirror_ort.distill.data import load_shards

    directory = tmp_path / "data"
    first = engine(source, directory).run(max_tokens=1000)
    shards = sorted(p.name for p in directory.glob("shard-*.safetensors"))
    stamps = {p.name: p.stat().st_mtime_ns for p in directory.glob("shard-*.safetensors")}
    assert shards and first.tokens >= 1000
    again = load_shards(directory)
    assert [c.tokens.tolist() for c in again] == [c.tokens.tolist() for c in first.continuations]
    assert all(torch.equal(a.topk_logprobs, b.topk_logprobs) for a, b in zip(again, first.continuations))
    more = engine(source, directory).run(max_tokens=2500)
    assert more.tokens >= 2500 and len(list(directory.glob("shard-*.safetensors"))) > len(shards)
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in directory.glob("shard-*.safetensors") if p.name in stamps)
    assert more.continuations[:len(first.continuations)] != [] and \
        [c.tokens.tolist() for c in more.continuations[:len(first.continuations)]] == [c.tokens.tolist() for c in first.continuations]
    # the same directory, a fresh engine, the same budget: nothing to do
    before = {p.name: p.stat().st_mtime_ns for p in directory.glob("shard-*.safetensors")}
    engine(source, directory).run(max_tokens=2500)
    assert {p.name: p.stat().st_mtime_ns for p in directory.glob("shard-*.safetensors")} == before
    # the engine's prompts: guard-clean and the same on every run (resume relies on it)
    assert [p.text for p in engine(source, directory).prompts()] == [p.text for p in more.prompts]


def test_a_benchmark_prompt_never_enters_the_data(source, tmp_path, monkeypatch):
    """A prompt planted in the prompt set is dropped when the guard knows it: with a guard made
    from a planted benchmark file, and with the packaged SpecBench guard and a real SpecBench turn."""
    from mirror_ort import prompts as prompt_set
    from mirror_ort.distill import data as data_module
    from mirror_ort.distill.benchmark_guard import BenchmarkGuard, spec_bench_guard

    planted = "Write a limerick about a kettle that refuses to boil before noon on rainy Tuesdays in spring."
    real = None
    spec_bench = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench" / "question.jsonl"
    if spec_bench.is_file():
        real = json.loads(spec_bench.read_text().splitlines()[0])["turns"][0]
        assert spec_bench_guard().contaminated(real)
    built = prompt_set.built_in_prompts()
    extra = [prompt_set.Prompt("writing", planted)] + ([prompt_set.Prompt("writing", real)] if real else [])
    monkeypatch.setattr(data_module, "built_in_prompts", lambda: extra + built)
    guard = BenchmarkGuard.from_texts([planted.upper() + "!"])  # the guard normalises case and punctuation
    texts = {p.text for p in engine(source, tmp_path / "a").prompts()}
    assert (real is None or real not in texts) and planted in texts  # the packaged guard does not know the planted one
    eng = engine(source, tmp_path / "b")
    eng.guard = guard
    assert planted not in {p.text for p in eng.prompts()}


def test_data_of_another_target_or_other_settings_is_refused(source, tmp_path, tokenizer):
    from tiny_models import build_tiny_model

    directory = tmp_path / "data"
    engine(source, directory).run(max_tokens=200)
    other = load_source(str(build_tiny_model(tmp_path / "other", layers=2, seed=3, tokenizer=tokenizer)))
    with pytest.raises(MirrorError, match="holds data of another target .num_layers: 4, this target: 2"):
        engine(other, directory).run(max_tokens=200)
    with pytest.raises(MirrorError, match="made with max_new_tokens=16, this run asks for 8"):
        engine(source, directory, max_new_tokens=8).run(max_tokens=200)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MirrorError, match="is not empty and holds no data.json"):
        engine(source, tmp_path / "busy").run(max_tokens=200)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_a_corrupt_shard_is_named_and_made_again(source, tmp_path):
    directory = tmp_path / "data"
    first = engine(source, directory).run(max_tokens=600)
    shards = sorted(directory.glob("shard-*.safetensors"))
    assert len(shards) >= 2
    keep = shards[0].read_bytes()
    shards[1].write_bytes(shards[1].read_bytes()[:100])  # truncated
    logged = []
    eng = engine(source, directory)
    eng.log = logged.append
    again = eng.run(max_tokens=600)
    assert any(shards[1].name in line and "corrupt" in line for line in logged), logged
    assert shards[0].read_bytes() == keep  # nothing else lost
    assert [c.tokens.tolist() for c in again.continuations] == [c.tokens.tolist() for c in first.continuations]


def test_reduced_vocabulary_keeps_the_frequent_ids(data):
    vocab = reduced_vocabulary(data, 50, 384, always=[2, 383])
    assert len(vocab) == 50 and vocab == sorted(vocab) and {2, 383} <= set(vocab)
    counts = np.bincount(torch.cat([c.tokens[c.prompt_length:] for c in data]).numpy(), minlength=384)
    assert int(np.argmax(counts)) in vocab
    index = draft_index(vocab, 384)
    assert index[vocab[7]] == 7 and (index >= 0).sum() == 50
    with pytest.raises(ValueError):
        reduced_vocabulary(data, 0, 384, always=[2])


def test_short_distillation_lowers_loss_and_raises_agreement(source, data, vocab_map, tmp_path):
    draft = fresh_draft(source, vocab_map)
    index = draft_index(vocab_map, 384)
    probe = make_batch(data[:16], index, SHAPE.streams)
    with torch.no_grad():
        before = forward_losses(draft, probe, 0.1)
    before_summary = summarize(draft, data)
    trainer = trainer_for(draft, data, vocab_map, tmp_path, max_steps=80)
    trainer.run()
    with torch.no_grad():
        after = forward_losses(draft.eval(), probe, 0.1)
    after_summary = summarize(draft, data)
    assert trainer.step == 80
    assert after["loss"] < 0.8 * before["loss"]
    assert after["agreement"] > before["agreement"] + 0.1
    assert after_summary["agreement"] > before_summary["agreement"] + 0.1
    assert after_summary["sd_gamma6"]["committed_per_target_call"] > before_summary["sd_gamma6"]["committed_per_target_call"]
    assert sum(after_summary["stream_accuracy"]) > sum(before_summary["stream_accuracy"])


def test_checkpoint_resumes_exactly(source, data, vocab_map, tmp_path):
    straight = trainer_for(fresh_draft(source, vocab_map), data, vocab_map, tmp_path / "a", max_steps=6)
    (tmp_path / "a").mkdir()
    for _ in range(6):
        straight.train_step()

    (tmp_path / "b").mkdir()
    first = trainer_for(fresh_draft(source, vocab_map), data, vocab_map, tmp_path / "b", max_steps=6)
    for _ in range(3):
        first.train_step()
    first.save_checkpoint()
    _assert_safetensors(tmp_path / "b" / "checkpoint.safetensors")
    resumed = trainer_for(fresh_draft(source, vocab_map, seed=5), data, vocab_map, tmp_path / "b", max_steps=6)
    assert resumed.load_checkpoint() and resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    for name, p in trainable_state(straight.draft).items():
        assert torch.allclose(p, trainable_state(resumed.draft)[name], atol=1e-6), name


def test_draft_directory_round_trips(source, vocab_map, tmp_path, target_dir):
    draft = fresh_draft(source, vocab_map)
    with torch.no_grad():
        for p in trainable_state(draft).values():
            p.add_(torch.randn_like(p) * 0.01)
    save_draft(draft, tmp_path / "d32", source.model, source.tokenizer, torch.float32)
    save_draft(draft, tmp_path / "d16", source.model, source.tokenizer, torch.float16)
    exact, half = load_draft(tmp_path / "d32", source.model), load_draft(tmp_path / "d16", source.model)
    for name, p in trainable_state(draft).items():
        assert torch.equal(trainable_state(exact)[name], p), name
        assert torch.allclose(trainable_state(half)[name], p, atol=1e-2, rtol=1e-3), name
    assert exact.vocab_map.tolist() == vocab_map and half.embed is source.model.model.embed_tokens
    with safe_open(str(tmp_path / "d16" / "draft.safetensors"), framework="pt") as f:
        assert not any("embed" in key for key in f.keys())  # the embedding stays the target's


def test_exported_draft_matches_pytorch(source, vocab_map, tmp_path, target_dir):
    draft = fresh_draft(source, vocab_map)
    with torch.no_grad():  # stream heads that differ from the main head
        for p in draft.stream_heads.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_draft(draft, tmp_path / "draft", source.model, source.tokenizer, torch.float32)
    bundle = export(target_dir, tmp_path / "bundle", draft=str(tmp_path / "draft"))
    facts = bundle.graph("draft")
    assert facts.streams == 2 and json.loads((bundle.path / facts.vocab_map).read_text()) == vocab_map
    assert {c["graph"] for c in bundle.validation["checks"] if c["passed"]} >= {"draft"}
    shapes = {o.name: o.shape for o in facts.outputs}
    assert shapes["stream_logits"][2:] == [2, DRAFT_VOCAB] and shapes["stream_ids"][2:] == [2]

    ids = torch.tensor([[5, 17, 40, 2, 99, 3, 61]])
    n, past_len = ids.shape[1], 0
    span = draft.span
    past = [torch.zeros(1, past_len, span.num_kv_heads, span.head_dim) for _ in range(2 * len(span.layers))]
    with torch.no_grad():
        ref = draft.eval()(ids, torch.arange(n)[None], torch.from_numpy(causal_mask(0, n)), torch.arange(n), *past)
    session = ort.InferenceSession(str(facts.path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "position_ids": np.arange(n)[None], "attention_mask": causal_mask(0, n),
             "head_rows": np.arange(n)}
    feeds.update({f"past.0.{kind}": np.zeros((1, 0, span.num_kv_heads, span.head_dim), np.float32) for kind in ("key", "value")})
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    np.testing.assert_allclose(got["logits"], ref[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["stream_logits"], ref[2].numpy(), atol=1e-4)
    mapped = np.array(vocab_map)
    assert np.array_equal(got["next_ids"], mapped[ref[0].numpy().argmax(-1)])  # target ids, not draft indices
    assert np.array_equal(got["stream_ids"], mapped[ref[2].numpy().argmax(-1)])
    assert not np.array_equal(got["stream_ids"][..., 0], got["next_ids"])


def test_replay_counts_committed_tokens_and_accepted_per_call():
    perfect = Matches(np.ones(12, bool), np.ones((12, 3), bool))
    # 6 accepted + bonus, then the last 5 (the window never runs past the end)
    assert replay(perfect, 6, False) == {"tokens": 12, "steps": 2, "draft_calls": 11, "accepted": 11}
    assert replay(perfect, 4, True) == {"tokens": 12, "steps": 3, "draft_calls": 3, "accepted": 10}
    never = Matches(np.zeros(5, bool), np.zeros((5, 3), bool))
    assert replay(never, 6, True)["steps"] == 5
    # main right, stream 0 wrong: one accepted token per call
    mixed = Matches(np.ones(8, bool), np.tile([False, True, True], (8, 1)))
    assert replay(mixed, 4, True) == {"tokens": 8, "steps": 4, "draft_calls": 4, "accepted": 4}


def test_cli_writes_an_exportable_draft_and_resumes(target_dir, tmp_path):
    out = tmp_path / "draft"
    args = [str(target_dir), "-o", str(out), "--layers", "1", "--streams", "1", "--draft-vocab", "256",
            "--samples-per-prompt", "0", "--max-new-tokens", "6", "--data-tokens", "600", "--self-written", "0",
            "--exit-minutes", "0", "--batch-size", "32", "--max-steps", "4", "--threads", "1", "--fp32"]
    result = CliRunner().invoke(distill, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "distill.json").read_text())
    assert report["steps"] == 4 and report["held_out"]["trained"]["positions"] > 0
    assert (out / "work" / "checkpoint.safetensors").exists()
    result = CliRunner().invoke(distill, args[:-5] + ["--max-steps", "6", "--resume", "--threads", "1", "--fp32"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 4" in result.output and json.loads((out / "distill.json").read_text())["steps"] == 6
    assert export(target_dir, tmp_path / "bundle", draft=str(out), validate=False).graph("draft").streams == 1


def test_cli_trains_from_a_data_dir_of_its_own_on_its_first_tokens(target_dir, tmp_path):
    """``--data`` elsewhere (reused across runs): the work dir is made for the checkpoint;
    ``--train-tokens`` trains on the first tokens only, held-out stays whole."""
    common = [str(target_dir), "--data", str(tmp_path / "data"), "--layers", "1", "--streams", "0",
              "--draft-vocab", "0", "--samples-per-prompt", "0", "--max-new-tokens", "6", "--data-tokens", "600",
              "--self-written", "0", "--max-steps", "2", "--exit-minutes", "0", "--threads", "1", "--fp32"]
    reports = []
    for name, extra in (("all", []), ("first", ["--train-tokens", "100"])):
        result = CliRunner().invoke(distill, [*common, "-o", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name / "work" / "checkpoint.safetensors").exists()
        reports.append(json.loads((tmp_path / name / "distill.json").read_text()))
    full, first = reports
    assert 100 <= first["training_positions"] < full["training_positions"]
    assert first["held_out"]["trained"]["positions"] == full["held_out"]["trained"]["positions"]


@pytest.mark.parametrize("extra, message", [
    (["--minutes", "0"], "leaves no time"),
    (["--layers", "9"], "exceeds the target's 4 layers"),
    (["--draft-vocab", "999"], "exceeds the target's vocabulary"),
    (["--resume", "--force"], "contradict"),
    (["--device", "gpu9"], "is not a PyTorch device"),
])
def test_cli_rejects_bad_settings(target_dir, tmp_path, extra, message):
    result = CliRunner().invoke(distill, [str(target_dir), "-o", str(tmp_path / "d"), *extra])
    assert isinstance(result.exception, MirrorError) and message in str(result.exception)


def test_cli_refuses_a_device_this_machine_lacks(target_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = CliRunner().invoke(distill, [str(target_dir), "-o", str(tmp_path / "d"), "--device", "cuda"])
    assert isinstance(result.exception, MirrorError) and "sees no cuda device here" in str(result.exception)
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_cli_rejects_unloadable_target_and_busy_output(tmp_path, target_dir):
    result = CliRunner().invoke(distill, [str(tmp_path / "missing.gguf"), "-o", str(tmp_path / "d")])
    assert isinstance(result.exception, MirrorError) and "does not exist" in str(result.exception)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = CliRunner().invoke(distill, [str(target_dir), "-o", str(busy)])
    assert isinstance(result.exception, MirrorError) and "in use" in str(result.exception)
    result = CliRunner().invoke(distill, [str(target_dir), "-o", str(busy), "--force"])
    assert isinstance(result.exception, MirrorError) and "is not a distilled draft" in str(result.exception)
    result = CliRunner().invoke(distill, [str(target_dir), "-o", str(busy), "--resume"])
    assert isinstance(result.exception, MirrorError) and "nothing to resume" in str(result.exception)
    assert (busy / "notes.txt").read_text() == "mine"


def test_budget_too_small_is_refused(source, data, vocab_map, tmp_path):
    trainer = trainer_for(fresh_draft(source, vocab_map), data, vocab_map, tmp_path, minutes=1e-5)
    with pytest.raises(MirrorError, match="fits fewer than"):
        trainer.run()


def test_draft_refuses_another_target(source, vocab_map, tmp_path, tokenizer):
    from tiny_models import build_tiny_model

    save_draft(fresh_draft(source, vocab_map), tmp_path / "draft", source.model, source.tokenizer)
    other = load_source(str(build_tiny_model(tmp_path / "other", layers=2, seed=3, tokenizer=tokenizer)))
    with pytest.raises(MirrorError, match="distilled from another target"):
        load_draft(tmp_path / "draft", other.model)


@pytest.fixture(scope="module")
def adapter(source, dataset):
    from mirror_ort.distill.exit_training import train_exit_adapter

    train, held_out = dataset.split()
    return train_exit_adapter(source.model, train, held_out, EXIT_LAYER, rank=16, max_steps=60, lr=5e-3,
                              bf16=False, log=lambda m: None)


@pytest.fixture(scope="module")
def distilled_dir(source, data, vocab_map, adapter, tmp_path_factory):
    """A briefly distilled draft with a reduced vocabulary, two streams and an exit adapter."""
    from mirror_ort.export.draft_dir import embedding_sha256

    work = tmp_path_factory.mktemp("distilled")
    draft = fresh_draft(source, vocab_map)
    trainer_for(draft, data, vocab_map, work, max_steps=40).run()
    save_draft(draft.eval(), work / "draft", source.model, source.tokenizer)
    adapter[0].save(work / "draft", embedding_sha256(source.model), adapter[1])
    return work / "draft"


@pytest.fixture(scope="module")
def distilled_pipe(distilled_dir, target_dir):
    """A bundle exported with that draft: its prefix applies the exit adapter."""
    from mirror_ort.runtime.pipeline import Pipeline

    return Pipeline.from_bundle(export(target_dir, distilled_dir.parent / "bundle", draft=str(distilled_dir)).path)


def test_the_exit_adapter_learns_and_the_prefix_graph_applies_it(adapter, distilled_pipe, source):
    """Trained on the target's exit hidden states: the overlap mass rises on the positions it
    learnt from (a random tiny target has little to generalise, so held-out is reported, as it
    is for the real model in the draft's README); in the bundle, validate compares the ONNX
    prefix's exit Top-kappa with the PyTorch adapter's. The exit head scores the draft's ids
    only, renormalised over them."""
    module, report = adapter
    fitted = report["train"]
    assert fitted["adapted"]["overlap"] > fitted["plain"]["overlap"], fitted
    assert report["held_out"]["adapted"]["positions"] > 0
    bundle = distilled_pipe.bundle
    assert bundle.manifest.early_exit.layer == EXIT_LAYER and bundle.manifest.early_exit.adapter["rank"] == 16
    checks = {c["name"]: c for c in bundle.validation["checks"] if c.get("graph") in ("prefix", "prefix+suffix")}
    assert checks["topk_agreement"]["value"] >= 0.95 and checks["exit_overlap"]["adapter"]
    # the graph's exit log-probs are the PyTorch adapter's, position by position
    import torch

    ids = distilled_pipe.encode("Once upon a time there was a little robot")
    from mirror_ort.runtime.stats import Stats
    from mirror_ort.runtime.target import Target

    target = Target(distilled_pipe.prefix, distilled_pipe.suffix, Stats())
    target.reset()
    _, message = target.prefix(ids, kappa=8)
    draft_ids = torch.tensor(distilled_pipe.vocab_map)
    assert bundle.manifest.early_exit.vocab_map == bundle.graph("draft").vocab_map
    assert np.isin(message.ids, distilled_pipe.vocab_map).all()
    with torch.no_grad():
        hidden = source.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[EXIT_LAYER]
        logits = source.model.lm_head(source.model.model.norm(module(hidden)))[0]
        want = torch.log_softmax(logits[:, draft_ids], -1).topk(8, -1)
    assert np.allclose(message.logprobs, want.values.numpy(), atol=1e-3)
    assert (message.ids == draft_ids[want.indices].numpy()).mean() > 0.95  # ties may order apart


def test_an_exit_adapter_for_another_exit_layer_is_refused(distilled_dir, target_dir, tmp_path):
    with pytest.raises(MirrorError, match="trained for exit layer 2, not 3: pass --exit-layer 2, or --no-exit-adapter"):
        export(target_dir, tmp_path / "b", draft=str(distilled_dir), exit_layer=3, validate=False)
    bundle = export(target_dir, tmp_path / "plain", draft=str(distilled_dir), exit_layer=3, exit_adapter=False,
                    validate=False)
    assert bundle.manifest.early_exit.adapter is None


def test_a_kappa_past_the_drafts_vocabulary_is_refused(distilled_dir, target_dir, tmp_path):
    """The early exit scores the draft's ids only: it cannot name more candidates than there are."""
    with pytest.raises(MirrorError, match=f"--kappa {DRAFT_VOCAB + 1} exceeds the draft's vocabulary of {DRAFT_VOCAB} ids"):
        export(target_dir, tmp_path / "b", draft=str(distilled_dir), kappa=DRAFT_VOCAB + 1, validate=False)
    assert not (tmp_path / "b").exists()


def test_sd_and_mirror_with_a_distilled_draft_are_lossless_greedy(distilled_pipe):
    pipe, accepted = distilled_pipe, 0
    for prompt in ("Translate to German: The weather is nice", "def fibonacci(n):", "Once upon a time"):
        want = pipe.generate(prompt, method="ar", max_new_tokens=30).token_ids
        for method in ("sd", "mirror"):
            for gamma in (1, 3, 6):
                result = pipe.generate(prompt, method=method, max_new_tokens=30, gamma=gamma)
                assert result.token_ids == want, (prompt, method, gamma)
                accepted += result.stats["accepted_draft_tokens"]
    assert accepted > 0  # the draft's target ids (mapped in-graph) do get accepted


def test_sampling_with_a_distilled_draft_keeps_the_target_distribution(distilled_pipe):
    """Chi-square fit of 3-token continuations to the exact target distribution (see test_runtime):
    the runtime scatters the draft's V' probabilities into the target vocabulary."""
    from test_runtime import _exact_distribution, chi_square_pvalue

    pipe, steps, top_k, temperature, draws = distilled_pipe, 3, 3, 1.5, 400
    prompt_ids = pipe.encode("Once upon a time there was")
    exact = _exact_distribution(pipe, prompt_ids, steps, top_k, temperature)
    outcomes = sorted(exact)
    for method in ("sd", "mirror"):
        counts = dict.fromkeys(outcomes, 0)
        for seed in range(draws):
            ids = pipe.generate(prompt_ids, method=method, max_new_tokens=steps, temperature=temperature,
                                top_k=top_k, seed=seed, gamma=2).token_ids
            counts[tuple(ids)] += 1
        p_value = chi_square_pvalue(counts, exact)
        assert p_value > 1e-3, (method, p_value)
