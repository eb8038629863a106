"""Writes docs/export-matrix.md: what `mirror-ort validate` proves per family, model and variant.

Tiny random models (tests/tiny_models.py ARCH_CONFIGS, 4 layers, sliding windows of 8 where the
family has them) are exported here at fp32, int4 and with a static NPU draft, each validated as
`mirror-ort export` does. Real models are the bundles named with --bundle (their manifest's
validation report, written by `mirror-ort export` or `mirror-ort validate`); a real-model cell
without a bundle says so.

    python docs/export_matrix.py --out docs/export-matrix.md \\
        --bundle llama:SmolLM2-135M:fp32=bundles/smollm2 --bundle gemma3_text:"Gemma 3 270M":int4=bundles/gemma3-270m-int4
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

VARIANTS = {  # export options per variant
    "fp32": {"draft": "layers:2"},
    "int4": {"draft": "layers:2", "precision": "int4"},
    "static draft": {"draft": "layers:2", "static": {"seq": 8, "capacity": 64}},
}
# int4 is measured against the fp32 PyTorch model: report its cost, fail only a broken export
INT4_THRESHOLDS = {"argmax_agreement": 0.0, "topk_agreement": 0.0, "perplexity_ratio": 100.0}
COLUMNS = ("family", "model", "variant", "max logit diff", "argmax agreement", "top-k agreement", "exit overlap",
           "perplexity ratio", "exact_windows", "draft max logit diff", "draft argmax", "passed")


def figures(report: dict | None) -> dict:
    """The matrix's figures from a bundle's validation report."""
    if not report:
        return {"passed": None}
    checks = {(c["name"], c.get("graph")): c for c in report["checks"]}

    def value(name, graph, key="value"):
        c = checks.get((name, graph))
        return None if c is None or c.get("skipped") else c.get(key)

    return {"max logit diff": value("max_logit_diff", "prefix+suffix"),
            "argmax agreement": value("argmax_agreement", "prefix+suffix"),
            "top-k agreement": value("topk_agreement", "prefix"),
            "exit overlap": value("exit_overlap", "prefix+suffix"),
            "perplexity ratio": value("perplexity", "prefix+suffix", "ratio"),
            "exact_windows": value("exact_windows", "prefix+suffix"),
            "draft max logit diff": value("max_logit_diff", "draft"),
            "draft argmax": value("argmax_agreement", "draft"),
            "passed": report["passed"]}


def tiny_rows(families: list[str], log) -> list[dict]:
    from conftest import export
    from tiny_models import build_tiny_model, tiny_tokenizer
    from transformers import AutoConfig

    from mirror_ort.errors import MirrorError

    tokenizer, rows = tiny_tokenizer(384), []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in families:
            model = build_tiny_model(Path(tmp) / arch, arch, layers=4, seed=1, tokenizer=tokenizer)
            family = AutoConfig.from_pretrained(model).model_type
            for variant, options in VARIANTS.items():
                t = time.perf_counter()
                thresholds = INT4_THRESHOLDS if variant == "int4" else None
                try:
                    report = export(model, Path(tmp) / f"{arch}-{variant}", thresholds=thresholds,
                                    **options).validation
                except MirrorError as e:  # a failed validation: the matrix shows the failure
                    report, error = None, str(e)
                else:
                    error = None
                row = {"family": family, "model": f"tiny random ({arch})", "variant": variant, **figures(report)}
                if error:
                    row["error"] = error
                rows.append(row)
                log(f"{arch} {variant}: passed={row['passed']} in {time.perf_counter() - t:.0f}s")
    return rows


def real_rows(specs: list[str], reports: list[str]) -> list[dict]:
    """``family:model:variant=PATH`` -> rows from the bundles' validation reports, or (``reports``)
    from report files: ``validation.json``, or an older bundle's manifest that embedded it."""
    from mirror_ort.bundle import Bundle

    rows = []
    for spec, from_file in [(s, False) for s in specs] + [(r, True) for r in reports]:
        label, _, path = spec.partition("=")
        family, model, variant = label.split(":")
        if from_file:
            data = json.loads(Path(path).read_text())
            report = data.get("validation", data)
        else:
            report = Bundle.load(path).validation if path else None
        rows.append({"family": family, "model": model, "variant": variant, **figures(report),
                     "bundle": Path(path).name if path else None})
    return rows


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return "0" if value == 0 else (f"{value:.2e}" if abs(value) < 1e-2 else f"{value:.3f}")
    return str(value)


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Export matrix",
        "",
        "What `mirror-ort validate` proves for each family: the bundle's prefix + suffix against the "
        "PyTorch model in windows of 1 and several tokens on growing caches (104 positions over three text "
        "prompts and random ids, 26 per sequence: past every sliding window of the tiny models), the early exit's "
        "Top-8 sets, the overlap mass (final token among the exit's Top-8), perplexity over the fp32 PyTorch "
        "model's, the draft against its PyTorch module, and `exact_windows`: the largest difference between a "
        "token's logits scored alone and inside a window (0 is what makes `sd` and `mirror` equal `ar`).",
        "",
        "Generated, not typed:",
        "",
        "```",
        command,
        "```",
        "",
        "Tiny random models: 4 layers, hidden 64, vocabulary 384, built from the configs in "
        "`tests/tiny_models.py` (sliding windows of 8 positions where the family slides; `llama3-rope` and "
        "`qwen3-yarn` scale their rotary tables). int4 is weight-only MatMulNBits (block 32, int8 activations), "
        "measured against the fp32 model; the static draft is the `--static` NPU graph (window 8, 64 positions). "
        "Real models: the bundles named, validated by `mirror-ort export`, or the report file named with `--report` (Gemma 3 270M's: the manifest of its export before schema 3, which embedded the report); `-` where a figure does not apply or "
        "the bundle was not made.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |")
    failures = [r for r in rows if r.get("error")]
    if failures:
        lines += ["", "Failures:", ""] + [f"* {r['model']} {r['variant']}: {r['error']}" for r in failures]
    lines += ["", f"Generated {time.strftime('%Y-%m-%d', time.gmtime())} on {platform.machine()} "
              f"({platform.python_version()})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from tiny_models import ARCH_CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "export-matrix.md"))
    parser.add_argument("--json", help="Also write the rows as JSON here.")
    parser.add_argument("--families", default=",".join(ARCH_CONFIGS), help="Tiny families (ARCH_CONFIGS keys).")
    parser.add_argument("--bundle", action="append", default=[], metavar="FAMILY:MODEL:VARIANT=PATH",
                        help="A real model's bundle (repeatable); PATH may be empty for 'not made'.")
    parser.add_argument("--report", action="append", default=[], metavar="FAMILY:MODEL:VARIANT=FILE",
                        help="A real model's validation report file instead of its bundle (repeatable).")
    args = parser.parse_args(argv)
    rows = tiny_rows([f for f in args.families.split(",") if f], log=lambda m: print(m, file=sys.stderr))
    rows += real_rows(args.bundle, args.report)
    rows.sort(key=lambda r: (r["family"], not r["model"].startswith("tiny"), r["model"]))
    command = "python docs/export_matrix.py " + " ".join(
        ["--out " + args.out] + [f"--bundle '{b}'" for b in args.bundle] + [f"--report '{r}'" for r in args.report])
    Path(args.out).write_text(markdown(rows, command))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
