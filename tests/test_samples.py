"""The samples under samples/ keep working: the NPU chat app and the CI export-validation script.

One export of the tiny model (by the CI script itself) serves every test here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CHAT = SAMPLES / "npu_chat" / "chat.py"
VALIDATE = SAMPLES / "ci_validate" / "validate.sh"
REPLY = re.compile(r"assistant> (.*?)\n\[(\d+) tokens in [\d.]+ s: [\d.]+ tok/s, ([\d.]+) tokens per target call, "
                   r"prompt \d+ tokens, target (\S+), draft (\S+)\]", re.S)


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "MIRROR_ORT": f"{sys.executable} -m mirror_ort.cli",
           "PYTHON": sys.executable}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _validate(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(VALIDATE), *args], capture_output=True, text=True, env=_env(**env), timeout=300)


def _chat(bundle, stdin: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHAT), str(bundle), *args], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", env=_env(), timeout=120)


@pytest.fixture(scope="module")
def ci_pass(tmp_path_factory, target_dir):
    """The CI script on the tiny model: export (draft = its first layer), validate, smoke test."""
    work = tmp_path_factory.mktemp("ci")
    prompts = work / "prompts.txt"
    prompts.write_text("The capital of France is\n\ndef fibonacci(n):\n")
    result = _validate(str(target_dir), BUNDLE_DIR=work / "bundle", REPORT_DIR=work / "report", DRAFT="layers:1",
                       SMOKE_PROMPTS=prompts, SMOKE_MAX_NEW_TOKENS=12)
    return result, work / "bundle", work / "report"


def test_ci_script_passes_on_tiny_model(ci_pass):
    result, bundle, report_dir = ci_pass
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: all validation checks passed and Mirror-SD matched autoregressive decoding on 2 prompts" \
        in result.stdout
    report = json.loads((report_dir / "validation.json").read_text())
    assert report["passed"] and all(c["passed"] for c in report["checks"])
    assert any(c["name"] == "argmax_agreement" for c in report["checks"])  # parity ran, not only structure
    smoke = [json.loads(line) for line in (report_dir / "smoke.jsonl").read_text().splitlines()]
    assert len(smoke) == 2 and all(s["same"] and s["ar_tokens"] > 0 for s in smoke)
    with tarfile.open(report_dir / "mirror-ort-report.tar.gz") as archive:
        names = {Path(n).name for n in archive.getnames()}
    assert {"validation.json", "validate.log", "export.log", "smoke.jsonl", "manifest.json"} <= names
    assert (bundle / "mirror_ort.json").is_file()


@pytest.mark.parametrize("graph", ["suffix.onnx", "draft.onnx"])
def test_ci_script_fails_on_corrupt_graph(ci_pass, tmp_path, graph):
    _, bundle, _ = ci_pass
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    data = bytearray((broken / graph).read_bytes())
    data[64:192] = b"\xff" * 128
    (broken / graph).write_bytes(bytes(data))
    report_dir = tmp_path / "report"
    result = _validate("--existing", str(broken), REPORT_DIR=report_dir, VALIDATE_ARGS="--no-parity")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL: validation failed: the bundle {broken} must not ship" in result.stderr
    role = graph.removesuffix(".onnx")
    assert f"failed check sha256/{role}" in result.stdout and f"failed check loads_in_ort/{role}" in result.stdout
    assert "losslessness smoke test" not in result.stdout  # stopped at the failed check
    assert json.loads((report_dir / "validation.json").read_text())["passed"] is False
    assert (report_dir / "mirror-ort-report.tar.gz").is_file()  # archived on failure too


def test_ci_script_rejects_a_directory_that_is_not_a_bundle(tmp_path):
    result = _validate("--existing", str(tmp_path), REPORT_DIR=tmp_path / "report")
    assert result.returncode == 2
    assert "is not a mirror-ort bundle" in result.stderr


def test_chat_two_turns(ci_pass):
    from mirror_ort import Pipeline

    _, bundle, _ = ci_pass
    turns = ["Hello there", "Tell me about Paris"]
    result = _chat(bundle, "\n".join(turns) + "\n/exit\n", "--max-new-tokens", "16")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^providers: target CPUExecutionProvider, draft \S+$", out, re.M)
    replies = REPLY.findall(out)
    assert len(replies) == 2, out
    for text, tokens, per_call, target, draft in replies:
        assert int(tokens) > 0 and float(per_call) >= 1.0
        assert target == "CPUExecutionProvider" and draft != "none"
    assert out.rstrip().endswith("bye")

    # The replies are the model's greedy answers to the conversation so far (the first reply included).
    pipe = Pipeline.from_bundle(bundle)
    messages = []
    for turn, (printed, *_) in zip(turns, replies):
        messages.append({"role": "user", "content": turn})
        expected = pipe.generate(messages=messages, max_new_tokens=16).text
        expected = expected.replace("\r\n", "\n").replace("\r", "\n")
        assert printed and expected.startswith(printed), (printed, expected)
        messages.append({"role": "assistant", "content": printed})


def test_chat_falls_back_visibly_and_refuses_a_lone_failing_provider(ci_pass):
    _, bundle, _ = ci_pass
    # qnn is either missing or refuses this dynamic-shape bundle: either way the fallback is announced.
    result = _chat(bundle, "Hi\n", "--draft-ep", "qnn,cpu", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^draft provider qnn (skipped|failed to start): .+: trying cpu$", result.stdout, re.M)
    assert "draft CPUExecutionProvider" in result.stdout
    assert len(REPLY.findall(result.stdout)) == 1  # EOF ends the chat after one turn

    alone = _chat(bundle, "Hi\n", "--draft-ep", "qnn")
    assert alone.returncode == 2
    assert "no draft provider could start (qnn: " in alone.stderr


def test_chat_drops_oldest_turns_when_too_long(ci_pass):
    _, bundle, _ = ci_pass
    turns = ["Hello there my friend", "Tell me about Paris please", "And what about Rome", "/exit"]
    result = _chat(bundle, "\n".join(turns) + "\n", "--max-length", "64", "--max-new-tokens", "16", "--draft-ep", "cpu")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "capacity 64 tokens" in out
    assert re.search(r"\(conversation too long for the 64-token capacity: dropped the (\d+ )?oldest turns?, \d+ kept\)",
                     out), out
    assert len(REPLY.findall(out)) == 3


def test_chat_missing_bundle(tmp_path):
    missing = tmp_path / "nowhere"
    result = _chat(missing, "hello\n")
    assert result.returncode == 2
    assert f"no bundle at {missing}: create one with `mirror-ort export -o {missing}`" in result.stderr
    assert "Traceback" not in result.stderr
