"""The bench: SpecBench reading, fair interleaved timing, the report's figures, the peers."""

import json
import statistics

import pytest
from click.testing import CliRunner

from mirror_ort.bench import methods as bench_methods
from mirror_ort.bench import requirements
from mirror_ort.bench.dataset import load_prompts, read_questions
from mirror_ort.bench.methods import PipelineRow, parse_methods
from mirror_ort.bench.suite import BenchOptions, run_bench
from mirror_ort.cli import main
from mirror_ort.errors import MirrorError
from mirror_ort.generation import GenerationConfig as Settings

QUESTIONS = [
    {"question_id": 1, "category": "qa", "turns": ["The capital of France is", "And of Italy?"]},
    {"question_id": 2, "category": "qa", "turns": ["Once upon a time there was a little robot"]},
    {"question_id": 3, "category": "math", "turns": ["one, two, three, four", "Count on."]},
    {"question_id": 4, "category": "math", "turns": ["def fibonacci(n):"]},
    {"question_id": 5, "category": "math", "turns": ["Translate to German: The weather"]},
]
REPORT_KEYS = {"tokens_per_s", "speedup", "mean_accepted", "lossless_rate", "reuse_rate", "fallback_rate",
               "tokens_per_s_mean", "tokens_per_s_median", "seconds_mean", "seconds_median", "prompts"}


def write_dataset(path, questions=QUESTIONS, extra_lines=()):
    lines = [json.dumps(q) for q in questions] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("spec") / "question.jsonl")


def _perturbed(ctx, alloc):
    """A method that really differs from ar: ar, but sampled at temperature 1."""
    return PipelineRow("ar-sampled" + alloc.suffix, "ar", alloc, ctx.pipeline(alloc), "mirror-ort ar, sampled",
                       {"target": alloc.target_threads}, overrides={"temperature": 1.0, "seed": 3})


@pytest.fixture(scope="module")
def report(bundle_layers, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(bench_methods.METHODS, "ar-sampled", _perturbed)
        options = BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,sd,mirror,ar-sampled",
                               alloc="both", per_category=2, settings=Settings(max_new_tokens=12, gamma=3),
                               json_out=str(out / "bench.json"), plot_out=str(out / "bench.png"), progress=False)
        report, text = run_bench(options, log=lambda m: None)
    return report, text, out


def test_json_has_every_key(report):
    report, text, out = report
    on_disk = json.loads((out / "bench.json").read_text())
    assert set(on_disk) >= {"settings", "methods"}
    assert on_disk["complete"] is True and on_disk["prompts_done"] == 4
    assert set(on_disk["methods"]) == set(report["methods"])
    settings = on_disk["settings"]
    for key in ("dataset", "prompts", "methods", "alloc", "allocations", "cores", "warmup", "max_new_tokens",
                "temperature", "gamma", "target_ep", "draft_ep", "versions", "baseline"):
        assert key in settings, key
    assert settings["allocations"]["split"]["target_threads"] == 1
    assert settings["allocations"]["split"]["draft_threads"] == 1
    names = {"ar", "sd", "mirror", "ar-sampled", "ar/split", "sd/split", "mirror/split", "ar-sampled/split"}
    assert set(on_disk["methods"]) == names
    for name, entry in on_disk["methods"].items():
        assert REPORT_KEYS <= set(entry), name
        assert set(entry["per_category"]) == {"qa", "math"}
        for figures in entry["per_category"].values():
            assert REPORT_KEYS <= set(figures)
        assert len(entry["per_prompt"]) == 4  # two questions in each of two categories, first turns
        assert entry["threads"]["target"] == (1 if name.endswith("/split") else settings["cores"])
    assert on_disk["methods"]["mirror"]["reuse_rate"] is not None
    assert on_disk["methods"]["ar"]["reuse_rate"] is None
    assert (out / "bench.png").stat().st_size > 0
    assert "overall (4 prompts)" in text and "qa (2 prompts)" in text and "mirror/split" in text


def test_speedups_are_computed_from_the_recorded_times(report):
    methods = report[0]["methods"]

    def rate(entries):
        return sum(e["new_tokens"] for e in entries) / sum(e["seconds"] for e in entries)

    base = methods["ar"]["per_prompt"]
    for name, entry in methods.items():
        mine = entry["per_prompt"]
        assert entry["tokens_per_s"] == pytest.approx(rate(mine))
        assert entry["speedup"] == pytest.approx(rate(mine) / rate(base))
        for category, figures in entry["per_category"].items():
            cat = [e for e in mine if e["category"] == category]
            cat_base = [e for e in base if e["category"] == category]
            assert figures["speedup"] == pytest.approx(rate(cat) / rate(cat_base))
            assert figures["tokens_per_s_median"] == pytest.approx(
                statistics.median(e["new_tokens"] / e["seconds"] for e in cat))
    assert methods["ar"]["speedup"] == pytest.approx(1.0)


def test_lossless_column_catches_a_planted_difference(report):
    methods = report[0]["methods"]
    for name in ("ar", "sd", "mirror", "ar/split", "sd/split", "mirror/split"):
        assert methods[name]["lossless_rate"] == 1.0, name
    assert methods["ar-sampled"]["lossless_rate"] < 1.0
    assert methods["ar-sampled/split"]["lossless_rate"] < 1.0
    assert any(e["lossless"] is False for e in methods["ar-sampled"]["per_prompt"])


def test_lossless_is_not_claimed_when_sampling(bundle_layers, dataset):
    report, _ = run_bench(BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,sd",
                                       per_category=1, warmup=0, progress=False,
                                       settings=Settings(max_new_tokens=6, temperature=0.8)), log=lambda m: None)
    assert report["methods"]["sd"]["lossless_rate"] is None
    assert report["settings"]["lossless_reference"] is None


def test_multi_turn_prompts_carry_ar_answers(bundle_layers, dataset):
    report, _ = run_bench(BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,mirror",
                                       turns="all", categories="math", warmup=0, progress=False,
                                       settings=Settings(max_new_tokens=6)), log=lambda m: None)
    prompts = report["methods"]["mirror"]["per_prompt"]
    assert [(p["question_id"], p["turn"]) for p in prompts] == [(3, 0), (3, 1), (4, 0), (5, 0)]
    first, second = prompts[0], prompts[1]
    assert second["prompt_tokens"] > first["prompt_tokens"] + first["new_tokens"]  # history: turn 1 + ar's answer
    assert report["methods"]["mirror"]["lossless_rate"] == 1.0


@pytest.fixture(scope="module")
def bundle_int4(tmp_path_factory, target_dir):
    from conftest import export

    return export(target_dir, tmp_path_factory.mktemp("b4") / "int4", draft="layers:2", precision="int4",
                  validate=False).path


def test_bundles_of_two_precisions_in_one_run(bundle_layers, bundle_int4, dataset):
    """Rows of the second bundle carry its precision; each is lossless against its own bundle's ar."""
    report, text = run_bench(BenchOptions(bundles=[str(bundle_layers), str(bundle_int4)], dataset=str(dataset),
                                          methods="ar,sd,mirror", per_category=1, warmup=0, progress=False,
                                          settings=Settings(max_new_tokens=8, gamma=3)), log=lambda m: None)
    methods = report["methods"]
    assert list(methods) == ["ar", "sd", "mirror", "ar@int4", "sd@int4", "mirror@int4"]
    assert [b["tag"] for b in report["settings"]["bundles"]] == ["", "@int4"]
    assert report["settings"]["bundles"][1]["genai_precision"] == "int4"
    for name in ("sd@int4", "mirror@int4"):
        assert methods[name]["lossless_reference"] == "ar@int4"
        assert methods[name]["lossless_rate"] == 1.0
    assert methods["ar@int4"]["speedup"] != pytest.approx(1.0, abs=1e-9)  # over the first bundle's ar
    for name in methods:
        parts = methods[name]["ms_per_token"]
        assert parts["target"] > 0 and "glue" in parts  # steps without a tree: the fused target
    assert methods["mirror"]["ms_per_token"]["prefix"] > 0 and methods["mirror"]["ms_per_token"]["suffix"] > 0
    assert methods["ar"]["ms_per_token"]["prefix"] == methods["ar"]["ms_per_token"]["suffix"] == 0
    assert methods["mirror"]["ms_per_token"]["draft_tree"] > 0 and methods["ar"]["ms_per_token"]["draft"] == 0
    # sd shares ar's pipeline, but no row starts from another row's prompt cache: each prefills, like the peers
    assert all(p["cached_prompt_tokens"] == 0 for m in methods.values() for p in m["per_prompt"])
    assert "ar@int4" in text and "where the time went" in text


def test_bundles_must_share_a_tokenizer(bundle_layers, dataset, tmp_path):
    import shutil

    other = shutil.copytree(bundle_layers, tmp_path / "other")
    manifest = json.loads((other / "mirror_ort.json").read_text())
    manifest["tokenizer"]["chat_template"] = "{{ messages[0]['content'] }}"
    (other / "mirror_ort.json").write_text(json.dumps(manifest))
    code, out = _cli(bundle_layers, other, "--dataset", dataset, "--no-progress")
    assert code == 2 and "has another tokenizer or chat template" in out
    code, out = _cli(bundle_layers, bundle_layers, "--dataset", dataset, "--no-progress")
    assert code == 2 and "is named twice" in out


def test_a_run_that_dies_keeps_what_it_measured(bundle_layers, dataset, tmp_path):
    def crashing(ctx, alloc):
        row = PipelineRow("crash" + alloc.suffix, "ar", alloc, ctx.pipeline(alloc), "fails on its second prompt", {})
        real, calls = row.generate, []

        def generate(ids, settings):
            calls.append(ids)
            if len(calls) == 2:
                raise MirrorError("planted failure")
            return real(ids, settings)
        row.generate = generate
        return row

    out = tmp_path / "bench.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(bench_methods.METHODS, "crash", crashing)
        with pytest.raises(MirrorError, match="planted failure"):
            run_bench(BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,crash",
                                   warmup=0, progress=False, json_out=str(out), settings=Settings(max_new_tokens=4)),
                      log=lambda m: None)
    report = json.loads(out.read_text())
    assert report["complete"] is False and report["prompts_done"] == 1
    assert [len(report["methods"][n]["per_prompt"]) for n in ("ar", "crash")] == [1, 1]


# --- the dataset and other bad input -------------------------------------------------------------------


def test_dataset_selection(dataset):
    assert len(read_questions(dataset)) == 5
    prompts = load_prompts(dataset, per_category=1)
    assert [(p.category, p.question_id) for p in prompts] == [("qa", 1), ("math", 3)]
    assert [p.key for p in load_prompts(dataset, categories=["math"], turns="all")] == ["3:0", "3:1", "4:0", "5:0"]


def _cli(*args):
    result = CliRunner().invoke(main, ["bench", *map(str, args)])
    return result.exit_code, result.output


def test_missing_dataset(bundle_layers, tmp_path):
    code, out = _cli(bundle_layers, "--dataset", tmp_path / "nope.jsonl", "--no-progress")
    assert code == 2 and "nope.jsonl does not exist" in out
    assert len(out.strip().splitlines()) == 1


def test_bad_json_line_is_named(bundle_layers, tmp_path):
    path = write_dataset(tmp_path / "q.jsonl", QUESTIONS[:2], ['{"question_id": 9, "category": "qa", "turns": ['])
    code, out = _cli(bundle_layers, "--dataset", path, "--no-progress")
    assert code == 2 and "line 3" in out and "not valid JSON" in out
    path = write_dataset(tmp_path / "q2.jsonl", QUESTIONS[:1], ['{"question_id": 9, "turns": ["x"]}'])
    with pytest.raises(MirrorError, match="line 2 .*lacks category"):
        read_questions(path)
    path = write_dataset(tmp_path / "q3.jsonl", QUESTIONS[:1], ['{"question_id": 9, "category": "qa", "turns": "x"}'])
    with pytest.raises(MirrorError, match="line 2: turns must be"):
        read_questions(path)


def test_unknown_method(bundle_layers, dataset):
    code, out = _cli(bundle_layers, "--dataset", dataset, "--methods", "ar,medusa", "--no-progress")
    assert code == 2 and "unknown method 'medusa'" in out and "ort-genai" in out
    assert parse_methods("mirror,hf") == ["ar", "mirror", "hf", "hf-assisted"]


def test_category_with_no_prompts(bundle_layers, dataset):
    code, out = _cli(bundle_layers, "--dataset", dataset, "--categories", "qa,poetry", "--no-progress")
    assert code == 2 and "category 'poetry' has no prompts" in out and "qa, math" in out


def test_missing_peer_is_skipped_with_the_install_hint(bundle_layers, dataset, tmp_path, monkeypatch):
    real = requirements.installed
    monkeypatch.setattr(requirements, "installed", lambda m: False if m == "onnxruntime_genai" else real(m))
    out = tmp_path / "r.json"
    code, text = _cli(bundle_layers, "--dataset", dataset, "--methods", "ar,ort-genai", "--per-category", "1",
                      "--max-new-tokens", "4", "--warmup", "0", "--no-progress", "--json", out,
                      "--cache-dir", tmp_path / "cache")
    assert code == 0, text
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"ar"}
    for name in ("ort-genai", "ort-genai-sd"):
        assert "pip install onnxruntime-genai==0.18.0" in report["skipped"][name]
    assert "skipped:" in text and "onnxruntime-genai is not installed" in text


# --- the peers, when installed -------------------------------------------------------------------------


def test_hf_peers_match_ar(bundle_layers, dataset):
    pytest.importorskip("transformers")
    report, _ = run_bench(BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,hf",
                                       per_category=1, progress=False, threads=1,
                                       settings=Settings(max_new_tokens=10, gamma=3)),
                          log=lambda m: None)
    assert not report["skipped"]
    for name in ("hf", "hf-assisted"):
        assert report["methods"][name]["lossless_rate"] == 1.0, name
    assert report["methods"]["hf"]["mean_accepted"] == pytest.approx(1.0)
    # the draft's tokens are accepted: fewer target calls than plain decoding of the same tokens
    assert report["methods"]["hf-assisted"]["mean_accepted"] > report["methods"]["hf"]["mean_accepted"]
    assert "layers:2" in " ".join(report["methods"]["hf-assisted"]["notes"])


def test_ort_genai_peers_match_ar(bundle_layers, dataset, tmp_path):
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("onnx_ir")
    options = BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,ort-genai", per_category=1,
                           progress=False, threads=1, cache_dir=str(tmp_path),
                           settings=Settings(max_new_tokens=10, gamma=3))
    report, _ = run_bench(options, log=lambda m: None)
    assert not report["skipped"], report["skipped"]
    for name in ("ort-genai", "ort-genai-sd"):
        assert report["methods"][name]["lossless_rate"] == 1.0, name
    assert report["methods"]["ort-genai-sd"]["mean_accepted"] > report["methods"]["ort-genai"]["mean_accepted"]
    built = list((tmp_path / "genai").iterdir())
    assert len(built) == 1 and (built[0] / "genai_config.json").is_file()
    assert len(list((built[0] / "drafts").iterdir())) == 1
    messages = []
    run_bench(options, log=messages.append)
    assert not [m for m in messages if "building" in m], "rebuilt instead of using the cache"


def test_no_chat_benches_plain_prompts(bundle_layers, dataset):
    """--no-chat (base models): every row gets the turn's plain text, not the chat template."""
    from mirror_ort.runtime.pipeline import Pipeline

    options = BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,sd", per_category=1,
                           chat=False, settings=Settings(max_new_tokens=6, gamma=3), warmup=0, progress=False)
    report, _ = run_bench(options, log=lambda m: None)
    pipe = Pipeline.from_bundle(bundle_layers, load_draft=False)
    plain = {q["category"]: len(pipe.encode(q["turns"][0])) for q in reversed(QUESTIONS)}  # first of each category
    records = report["methods"]["sd"]["per_prompt"]
    assert [r["prompt_tokens"] for r in records] == [plain["qa"], plain["math"]]
    assert plain["qa"] < len(pipe.encode(QUESTIONS[0]["turns"][0], chat=True))
    assert report["settings"]["prompt_format"] == "plain text, no chat template"
    assert all(r["lossless"] for r in records)
    with pytest.raises(MirrorError, match="--no-chat benches single prompts"):
        run_bench(BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), chat=False, turns="all"))


def test_optimum_peer_matches_ar(bundle_layers, dataset, tmp_path):
    """optimum-onnx's ORTModelForCausalLM on its own export of the same source gives ar's greedy tokens."""
    pytest.importorskip("optimum.onnxruntime")
    options = BenchOptions(bundles=[str(bundle_layers)], dataset=str(dataset), methods="ar,optimum", per_category=1,
                           progress=False, threads=1, cache_dir=str(tmp_path), warmup=0,
                           settings=Settings(max_new_tokens=10))
    report, _ = run_bench(options, log=lambda m: None)
    assert not report["skipped"], report["skipped"]
    assert report["methods"]["optimum"]["lossless_rate"] == 1.0
    assert "optimum-onnx" in report["methods"]["optimum"]["runtime"]
    built = list((tmp_path / "optimum").iterdir())
    assert len(built) == 1 and (built[0] / "config.json").is_file()


def test_ort_genai_peers_on_a_sliding_window_model(tmp_path, dataset, tokenizer):
    """onnxruntime-genai needs a KV cache as long as the sliding window (Gemma 3's 512): the peer asks
    for that capacity and still stops at --max-new-tokens."""
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("onnx_ir")
    from conftest import export
    from tiny_models import build_tiny_model

    model = build_tiny_model(tmp_path / "m", "gemma3_text", layers=2, seed=1, tokenizer=tokenizer, sliding_window=64)
    bundle = export(model, tmp_path / "b", draft="layers:1", validate=False)
    options = BenchOptions(bundles=[str(bundle.path)], dataset=str(dataset), methods="ar,ort-genai", per_category=1,
                           progress=False, threads=1, cache_dir=str(tmp_path / "cache"), warmup=0,
                           settings=Settings(max_new_tokens=8, gamma=3))
    report, _ = run_bench(options, log=lambda m: None)
    assert not report["skipped"], report["skipped"]
    for name in ("ort-genai", "ort-genai-sd"):
        assert report["methods"][name]["lossless_rate"] == 1.0, name  # ar's ids: no more than 8 tokens either


@pytest.mark.parametrize("genai", [False, True])
def test_op_profile_sets_target_only_decoding_beside_genai(bundle_layers, tmp_path, genai):
    """`profile --ops`: per-op and per-layer tables of a prefill and the decode steps, for
    mirror-ort's prefix + suffix and (when installed) onnxruntime-genai's graph of the same model."""
    from mirror_ort.cli import main

    if genai:
        pytest.importorskip("onnxruntime_genai")
    out = tmp_path / "profile.md"
    args = ["profile", str(bundle_layers), "--ops", "--steps", "4", "--prompt-tokens", "8", "--markdown", str(out)]
    result = CliRunner().invoke(main, args + ([] if genai else ["--no-genai"]))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| **wall time per token** |" in text and "FusedMatMul" in text  # the grouped attention's products
    decode = text.split("| decode: op type |")[1].split("\n\n")[0]
    rows = [[float(c) for c in r.strip("|").split("|")[1:] if c.strip()] for r in decode.splitlines()[2:]]
    assert sum(r[0] for r in rows) > 0 and (sum(r[1] for r in rows if len(r) > 1) > 0) == genai  # genai's beside ours
