"""A bundle is untrusted input: nothing in it runs code, nothing it names leaves it, a changed
file is refused, --force deletes only what mirror-ort wrote, and a broken bundle always ends
in one clear line. Plus the runtime edges: threads, the draft worker, logging."""

import ast
import json
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror_ort.bundle import MANIFEST, Bundle
from mirror_ort.cli import main
from mirror_ort.errors import MirrorError
from mirror_ort.runtime.pipeline import Pipeline

EVIL = "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}"


def copy_bundle(bundle: Path, tmp_path: Path, name: str = "b") -> Path:
    return Path(shutil.copytree(bundle, tmp_path / name))


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def one_line_error(result) -> str:
    """The CLI's refusal: exit code 2 and exactly one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mirror-ort: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_chat_template_cannot_run_code(bundle_layers, tmp_path):
    """The template of the report: a shell command through Python internals. Refused, and the
    command never ran, in the CLI, the Python API and the distillation renderer alike."""
    bundle = copy_bundle(bundle_layers, tmp_path)
    marker = tmp_path / "PWNED"
    edit_manifest(bundle, lambda m: m["tokenizer"].update(chat_template=EVIL % marker))
    line = one_line_error(CliRunner().invoke(main, ["run", str(bundle), "--chat", "--prompt", "hi",
                                                    "--max-new-tokens", "2"]))
    assert "the chat template tried something a template may not do" in line
    with pytest.raises(MirrorError, match="may not do"):
        Pipeline.from_bundle(bundle).generate("hi", chat=True, max_new_tokens=2)
    from transformers import AutoTokenizer

    from mirror_ort.chat import chat_encoder

    tokenizer = AutoTokenizer.from_pretrained(bundle)
    tokenizer.chat_template = EVIL % marker
    with pytest.raises(MirrorError, match="may not do"):
        chat_encoder(tokenizer)("hi")
    assert not marker.exists()


def test_the_chat_template_renders_like_transformers(bundle_layers, tokenizer):
    """One renderer everywhere: the runtime's ids of a conversation are transformers' own."""
    pipe = Pipeline.from_bundle(bundle_layers, load_draft=False)
    messages = [{"role": "user", "content": "Once upon a time"}, {"role": "assistant", "content": "there was"},
                {"role": "user", "content": "a robot?"}]
    assert pipe.encode(messages=messages) == list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.onnx", "sub/../../outside.onnx", "link.onnx"])
def test_files_named_by_the_manifest_stay_inside_the_bundle(bundle_layers, tmp_path, name):
    bundle = copy_bundle(bundle_layers, tmp_path)
    (tmp_path / "outside.onnx").write_bytes((bundle / "suffix.onnx").read_bytes())
    (bundle / "link.onnx").symlink_to(tmp_path / "outside.onnx")

    def point(m):
        m["graphs"]["suffix"]["file"] = name
        m["files"][name] = m["files"]["suffix.onnx"]
    edit_manifest(bundle, point)
    with pytest.raises(MirrorError, match="not a file inside the bundle|leads outside the bundle"):
        Bundle.load(bundle)


def test_a_changed_file_is_refused_at_load_by_name(bundle_layers, tmp_path):
    bundle = copy_bundle(bundle_layers, tmp_path)
    data = bytearray((bundle / "suffix.onnx").read_bytes())
    data[-100] ^= 0x01  # one bit of a weight: the graph still loads, but it is not what was exported
    (bundle / "suffix.onnx").write_bytes(bytes(data))
    with pytest.raises(MirrorError, match=r"suffix.onnx does not match its sha256 in mirror_ort.json"):
        Pipeline.from_bundle(bundle)
    Pipeline.from_bundle(bundle, verify=False)  # the opt-out, for a bundle checked already
    line = one_line_error(CliRunner().invoke(main, ["run", str(bundle), "--prompt", "hi", "--max-new-tokens", "2"]))
    assert "suffix.onnx does not match its sha256" in line
    result = CliRunner().invoke(main, ["run", str(bundle), "--prompt", "hi", "--max-new-tokens", "2", "--no-verify",
                                       "--method", "ar"])
    assert result.exit_code == 0, result.output


def test_an_old_bundle_is_refused_with_the_fix(bundle_layers, tmp_path):
    bundle = copy_bundle(bundle_layers, tmp_path)
    edit_manifest(bundle, lambda m: m.update(schema_version=2))
    with pytest.raises(MirrorError, match="has schema version 2, this mirror-ort reads 3: re-export the bundle"):
        Bundle.load(bundle)


def test_validation_writes_its_report_beside_the_contract(bundle_layers):
    """validate never rewrites mirror_ort.json: the contract it checks stays byte for byte."""
    before = (bundle_layers / MANIFEST).read_bytes()
    result = CliRunner().invoke(main, ["validate", str(bundle_layers), "--no-parity", "--json"])
    assert result.exit_code == 0, result.output
    assert (bundle_layers / MANIFEST).read_bytes() == before
    assert json.loads((bundle_layers / "validation.json").read_text())["checks"] == json.loads(result.stdout)["checks"]


# -- --force replaces only what mirror-ort wrote ------------------------------------------------

def test_force_never_replaces_what_mirror_ort_did_not_write(tmp_path, target_dir):
    """Refused before any work (the model path below does not even exist: the refusal comes first)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    missing = str(tmp_path / "missing.gguf")
    for command in (["export", missing, "-o", str(home), "--force"], ["distill", missing, "-o", str(home), "--force"]):
        line = one_line_error(CliRunner().invoke(main, command))
        assert "so --force will not replace it" in line, line
    assert (home / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    for command in (["export", missing, "-o", str(tmp_path / "file")], ["distill", missing, "-o", str(tmp_path / "file")]):
        assert "is a file" in one_line_error(CliRunner().invoke(main, command))
    assert (tmp_path / "file").read_text() == "x"


def test_force_replaces_an_earlier_bundle(tmp_path, target_dir):
    from conftest import export

    out = tmp_path / "bundle"
    export(target_dir, out, draft="none", validate=False)
    (out / "stale.txt").write_text("from an earlier export")
    export(target_dir, out, draft="layers:1", validate=False, force=True)
    assert not (out / "stale.txt").exists() and Bundle.load(out).has_draft


# -- bad decoding flags: the CLI and the Python API refuse alike --------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--max-new-tokens", "-5", "--max-new-tokens -5: must be at least 1"),
    ("--temperature", "-1", "--temperature -1.0: must be 0 (greedy) or more"),
    ("--top-p", "2", "--top-p 2.0: must be in (0, 1]"),
    ("--top-k", "-3", "--top-k -3: must be 0 (off) or more"),
    ("--gamma", "0", "--gamma 0: must be auto or at least 1"),
    ("--max-branches", "0", "--max-branches 0: must be at least 1"),
])
def test_decoding_flags_out_of_range_are_refused(bundle_layers, flag, value, message):
    line = one_line_error(CliRunner().invoke(main, ["run", str(bundle_layers), "--prompt", "hi", flag, value]))
    assert message in line
    pipe = Pipeline.from_bundle(bundle_layers)
    keyword = flag[2:].replace("-", "_")
    with pytest.raises(MirrorError, match=message.split(":")[0]):
        pipe.generate("hi", **{keyword: float(value) if "." in message.split(":")[0] else int(value)})


# -- runtime edges --------------------------------------------------------------------------------

def test_a_pipeline_serves_several_threads_one_generation_at_a_time(bundle_layers):
    pipe = Pipeline.from_bundle(bundle_layers)
    prompts = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "Translate to German:"]
    methods = ["mirror", "sd", "ar", "mirror"]
    want = [pipe.generate(p, method=m, max_new_tokens=20).token_ids for p, m in zip(prompts, methods)]
    got = [None] * len(prompts)

    def work(i):
        for _ in range(2):
            got[i] = pipe.generate(prompts[i], method=methods[i], max_new_tokens=20).token_ids
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == want


def test_a_second_generation_on_a_streaming_thread_is_refused(bundle_layers):
    pipe = Pipeline.from_bundle(bundle_layers)
    stream = pipe.stream("Once upon a time", max_new_tokens=20)
    next(stream)
    with pytest.raises(MirrorError, match="still streaming a generation on this thread"):
        pipe.generate("hi", max_new_tokens=2)
    stream.close()
    assert pipe.generate("hi", max_new_tokens=2).token_ids  # closing the stream frees the pipeline


def test_the_draft_worker_is_gone_when_a_generation_ends(bundle_layers):
    """Also when the caller stops reading mid-way: no worker can write into the next run's cache."""
    pipe = Pipeline.from_bundle(bundle_layers)
    for stop_early in (False, True):
        stream = pipe.stream("Once upon a time", method="mirror", max_new_tokens=30)
        for i, _ in enumerate(stream):
            if stop_early and i == 1:
                break
        stream.close()
        assert not [t for t in threading.enumerate() if t.name == "mirror-draft"]


# -- the house: no import circles ---------------------------------------------------------------

def _imports(package: Path) -> dict[str, set[str]]:
    """module -> the mirror_ort modules it imports (at module level or inside functions)."""
    modules = {}
    for file in package.rglob("*.py"):
        parts = file.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph = {}
    for name, file in modules.items():
        base = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                where = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                for alias in node.names:
                    full = f"{where}.{alias.name}"
                    targets.add(full if full in modules else where)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_between_modules_or_subpackages():
    import mirror_ort

    graph = _imports(Path(mirror_ort.__file__).parent)
    assert _cycles(graph) == []

    def package(module):  # mirror_ort.export.exporter -> mirror_ort.export; top-level modules stand alone
        parts = module.split(".")
        return ".".join(parts[:2])
    packages = {}
    for module, targets in graph.items():
        packages.setdefault(package(module), set()).update(package(t) for t in targets if package(t) != package(module))
    assert _cycles(packages) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]  # the check can fail


# -- fuzz: every broken bundle ends in one clear line -----------------------------------------

def _mutations(manifest: dict):
    """(description, change) pairs: every typed key removed, given a wrong type, an out-of-range
    number, a path leaving the bundle, a template reaching Python internals."""
    free = ("provenance", "kv_cache", "inputs", "outputs", "names", "quantization", "generation")

    def walk(obj, path):
        for key, value in obj.items():
            here = path + [key]
            if key in free and len(here) <= 3:
                continue
            yield here, value
            if isinstance(value, dict):
                yield from walk(value, here)
    optional = {"attention_span_limit", "tied_embeddings", "dtype", "head", "adapter", "selection", "bos_token_id", "bos_token",
                "eos_token", "chat_template", "precision", "static", "streams", "source", "vocab_map", "one_row_exact"}
    for path, value in walk(manifest, []):
        if path[-1] not in optional and path[0] != "files" and path != ["graphs", "draft"]:
            yield f"remove {'.'.join(path)}", path, "remove"
        if path[0] == "files":
            continue
        wrong = "text" if not isinstance(value, str) else 7
        if value is not None:
            yield f"{'.'.join(path)} of the wrong type", path, wrong
        if isinstance(value, int) and not isinstance(value, bool):
            yield f"{'.'.join(path)} = -1", path, -1
    for role in ("prefix", "suffix", "draft"):
        yield f"graphs.{role}.file outside", ["graphs", role, "file"], "../../escape.onnx"
    yield "tokenizer.file absolute", ["tokenizer", "file"], "/etc/hostname"
    yield "graphs.prefix.layers reversed", ["graphs", "prefix", "layers"], [5, 1]
    yield "model.vocab_size too small for the eos ids", ["model", "vocab_size"], 2
    yield "early_exit.layer past the model", ["early_exit", "layer"], 99
    yield "chat template reaching internals", ["tokenizer", "chat_template"], EVIL % "/tmp/mirror-ort-fuzz-pwned"


def _set(manifest, path, change):
    target = manifest
    for key in path[:-1]:
        target = target[key]
    if change == "remove":
        target.pop(path[-1])
    else:
        target[path[-1]] = change


FILE_DAMAGE = {
    "truncated prefix.onnx": lambda b: (b / "prefix.onnx").write_bytes((b / "prefix.onnx").read_bytes()[:5000]),
    "flipped bytes in draft.onnx": lambda b: (b / "draft.onnx").write_bytes(
        bytes(x ^ 0xFF if i % 997 == 0 else x for i, x in enumerate((b / "draft.onnx").read_bytes()))),
    "missing tokenizer.json": lambda b: (b / "tokenizer.json").unlink(),
    "manifest not JSON": lambda b: (b / MANIFEST).write_text("{ not json"),
    "manifest a list": lambda b: (b / MANIFEST).write_text("[]"),
    "missing suffix.onnx": lambda b: (b / "suffix.onnx").unlink(),
}


def test_fuzzed_bundles_always_end_in_one_clear_line(bundle_layers, tmp_path, capsys):
    """Each case runs through the Python API, `run --chat` and `validate`: the API raises a
    MirrorError of one line, `run` exits 2 with one line, `validate` exits 2 with one line or 1
    with a report naming what failed. Nothing else (no traceback, no other exception, no success)."""
    original = json.loads((bundle_layers / MANIFEST).read_text())
    cases = [(name, lambda b, p=path, c=change: edit_manifest(b, lambda m: _set(m, p, c)))
             for name, path, change in _mutations(original)] + list(FILE_DAMAGE.items())
    assert len(cases) > 100
    runner = CliRunner()
    for number, (name, damage) in enumerate(cases):
        bundle = copy_bundle(bundle_layers, tmp_path, f"case{number}")
        damage(bundle)
        with pytest.raises(MirrorError) as refused:
            Pipeline.from_bundle(bundle).generate("hi", chat=True, max_new_tokens=2)
            pytest.fail(f"case {name!r} was not refused")
        assert "\n" not in str(refused.value), name
        one_line_error(runner.invoke(main, ["run", str(bundle), "--chat", "--prompt", "hi", "--max-new-tokens", "2"]))
        result = runner.invoke(main, ["validate", str(bundle), "--no-parity", "--json"])
        assert result.exit_code in (1, 2), name
        if result.exit_code == 1:
            assert not json.loads(result.stdout)["passed"], name
        else:
            one_line_error(result)
        shutil.rmtree(bundle)
    assert not Path("/tmp/mirror-ort-fuzz-pwned").exists()
    with capsys.disabled():
        print(f"\nfuzz: {len(cases)} broken bundles, each refused in one line by the API, run and validate")
