#!/usr/bin/env bash
# Reject a broken mirror-ort export before it ships.
#
#   validate.sh [MODEL]             export MODEL to $BUNDLE_DIR, then check it
#   validate.sh --existing BUNDLE   check a bundle exported earlier (no export)
#
# Steps: export -> `mirror-ort validate --json` (report kept in $REPORT_DIR) -> fail on any
# failed check -> losslessness smoke test: greedy `run --method ar` and `run --method mirror`
# must give the same token ids on every prompt. Everything written to $REPORT_DIR is archived
# into $REPORT_DIR/mirror-ort-report.tar.gz, pass or fail.
#
# Exit status: 0 all passed, 1 a check or the smoke test failed, 2 bad usage or setup.
#
# Environment (all optional):
#   MODEL                 model to export when no argument is given: a Hugging Face id, a local
#                         model directory, a .gguf file; empty = the embedded default (smollm2-135m)
#   BUNDLE_DIR            where the bundle is written            (default: mirror-ort-bundle)
#   DRAFT                 export --draft: auto, layers:K, a model (default: auto)
#   EXPORT_ARGS           more `mirror-ort export` arguments, e.g. "--exit-layer 12"
#   VALIDATE_ARGS         more `mirror-ort validate` arguments, e.g. "--no-parity"
#   REPORT_DIR            report, logs and archive              (default: mirror-ort-report)
#   SMOKE_PROMPTS         file with one smoke-test prompt per line (default: three built-in prompts)
#   SMOKE_MAX_NEW_TOKENS  tokens generated per prompt            (default: 32)
#   SMOKE_RUN_ARGS        more `mirror-ort run` arguments, e.g. "--draft-ep qnn"
#   MIRROR_ORT            the CLI command                       (default: mirror-ort)
#   PYTHON                a Python to read the JSON reports     (default: python3)

set -uo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

EXISTING=""
case "${1:-}" in
  -h|--help) usage ;;
  --existing) [ $# -eq 2 ] || usage; EXISTING="$2" ;;
  -*) usage ;;
  *) [ $# -le 1 ] || usage; MODEL="${1:-${MODEL:-}}" ;;
esac

MIRROR_ORT="${MIRROR_ORT:-mirror-ort}"
PYTHON="${PYTHON:-python3}"
BUNDLE_DIR="${EXISTING:-${BUNDLE_DIR:-mirror-ort-bundle}}"
DRAFT="${DRAFT:-auto}"
REPORT_DIR="${REPORT_DIR:-mirror-ort-report}"
SMOKE_MAX_NEW_TOKENS="${SMOKE_MAX_NEW_TOKENS:-32}"
ARCHIVE="$REPORT_DIR/mirror-ort-report.tar.gz"

step() { echo "==> $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
setup_error() { echo "ERROR: $*" >&2; exit 2; }

# $MIRROR_ORT may be a command with arguments (e.g. "python -m mirror_ort.cli"): split it on purpose.
# shellcheck disable=SC2086
cli() { $MIRROR_ORT "$@"; }

archive() {
  local rc=$?
  if [ -d "$REPORT_DIR" ]; then
    [ -f "$BUNDLE_DIR/mirror_ort.json" ] && cp "$BUNDLE_DIR/mirror_ort.json" "$REPORT_DIR/manifest.json" 2>/dev/null
    echo "exit status $rc" > "$REPORT_DIR/status.txt"
    # The archive is written outside the folder it packs: tar fails on a folder that changes under it.
    local packing
    packing=$(mktemp "${TMPDIR:-/tmp}/mirror-ort-report.XXXXXX")
    if tar -czf "$packing" -C "$REPORT_DIR" --exclude "$(basename "$ARCHIVE")" . 2>/dev/null \
        && mv "$packing" "$ARCHIVE"; then
      echo "report archived: $ARCHIVE"
    else
      rm -f "$packing"
      echo "warning: could not archive $REPORT_DIR" >&2
    fi
  fi
  exit $rc
}

command -v "${MIRROR_ORT%% *}" >/dev/null 2>&1 || setup_error "'${MIRROR_ORT%% *}' not found: pip install 'mirror-ort[export]' (or set MIRROR_ORT)"
command -v "$PYTHON" >/dev/null 2>&1 || setup_error "'$PYTHON' not found: set PYTHON to a Python 3 interpreter"
mkdir -p "$REPORT_DIR" || setup_error "cannot create $REPORT_DIR"
(cd "$REPORT_DIR" && rm -f validation.json validate.log export.log smoke-*.json smoke.log smoke.jsonl manifest.json \
  status.txt "$(basename "$ARCHIVE")")  # only what an earlier run wrote
trap archive EXIT

# 1. Export (skipped with --existing).
if [ -z "$EXISTING" ]; then
  step "export ${MODEL:-the embedded default model} -> $BUNDLE_DIR (draft $DRAFT)"
  # shellcheck disable=SC2086
  cli export ${MODEL:+"$MODEL"} -o "$BUNDLE_DIR" --draft "$DRAFT" --force --no-validate ${EXPORT_ARGS:-} \
      2>&1 | tee "$REPORT_DIR/export.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail "export failed: see $REPORT_DIR/export.log"
else
  step "checking the existing bundle $BUNDLE_DIR"
  [ -f "$BUNDLE_DIR/mirror_ort.json" ] || setup_error "$BUNDLE_DIR is not a mirror-ort bundle (no mirror_ort.json)"
fi

# 2. Validate: the JSON report on stdout, the readable check list on stderr.
step "mirror-ort validate --json ${VALIDATE_ARGS:-}"
# shellcheck disable=SC2086
cli validate "$BUNDLE_DIR" --json ${VALIDATE_ARGS:-} > "$REPORT_DIR/validation.json" 2> "$REPORT_DIR/validate.log"
validate_rc=$?
cat "$REPORT_DIR/validate.log"

# 3. Fail on any failed check (the report decides; the exit status must agree with it).
summary=$("$PYTHON" - "$REPORT_DIR/validation.json" <<'EOF'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
    checks = report["checks"]
except Exception as e:
    print(f"no readable report ({type(e).__name__}: {e})")
    sys.exit(3)
failed = [c for c in checks if not c["passed"]]
for c in failed:
    where = "/" + c["graph"] if "graph" in c else ""
    print(f"  failed check {c['name']}{where}: {c.get('error') or c.get('value')}")
print(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
sys.exit(0 if report["passed"] and not failed else 1)
EOF
)
report_rc=$?
echo "$summary"
if [ $report_rc -eq 3 ]; then
  fail "mirror-ort validate exited with status $validate_rc and wrote no report: see $REPORT_DIR/validate.log"
elif [ $report_rc -ne 0 ]; then
  fail "validation failed: the bundle $BUNDLE_DIR must not ship (report: $REPORT_DIR/validation.json)"
elif [ $validate_rc -ne 0 ]; then
  fail "mirror-ort validate exited with status $validate_rc although its report passed: see $REPORT_DIR/validate.log"
fi

# 4. Losslessness smoke test: greedy Mirror-SD must reproduce autoregressive decoding token for token.
step "losslessness smoke test: run --method ar vs --method mirror, $SMOKE_MAX_NEW_TOKENS tokens per prompt"
if [ -n "${SMOKE_PROMPTS:-}" ]; then
  [ -f "$SMOKE_PROMPTS" ] || setup_error "SMOKE_PROMPTS=$SMOKE_PROMPTS is not a file"
  prompts=$(cat "$SMOKE_PROMPTS")
else
  prompts=$'The capital of France is\ndef fibonacci(n):\nSpeculative decoding drafts tokens with a small model and'
fi

n=0
mismatches=0
while IFS= read -r prompt; do
  [ -n "$prompt" ] || continue
  n=$((n + 1))
  for method in ar mirror; do
    # shellcheck disable=SC2086
    if ! cli run "$BUNDLE_DIR" --prompt "$prompt" --method "$method" --max-new-tokens "$SMOKE_MAX_NEW_TOKENS" \
        --json ${SMOKE_RUN_ARGS:-} < /dev/null > "$REPORT_DIR/smoke-$n-$method.json" 2>> "$REPORT_DIR/smoke.log"; then
      tail -n 5 "$REPORT_DIR/smoke.log" >&2
      fail "prompt $n: mirror-ort run --method $method failed: see $REPORT_DIR/smoke.log"
    fi
  done
  if ! "$PYTHON" - "$REPORT_DIR/smoke-$n-ar.json" "$REPORT_DIR/smoke-$n-mirror.json" "$prompt" \
      "$REPORT_DIR/smoke.jsonl" <<'EOF'
import json, sys
ar, mirror = (json.load(open(p)) for p in sys.argv[1:3])
a, m = ar["token_ids"], mirror["token_ids"]
same = a == m
first = next((i for i, (x, y) in enumerate(zip(a, m)) if x != y), None if same else min(len(a), len(m)))
record = {"prompt": sys.argv[3], "same": same, "first_difference": first, "ar_tokens": len(a),
          "mirror_tokens": len(m), "mean_accepted": mirror["stats"]["mean_accepted"],
          "mirror_draft_ep": mirror["stats"]["draft_ep"]}
with open(sys.argv[4], "a") as f:
    f.write(json.dumps(record) + "\n")
verdict = "same tokens" if same else f"DIFFERENT from token {first}"
print(f"  prompt {json.dumps(sys.argv[3])}: {len(a)} tokens, {verdict}, "
      f"{record['mean_accepted']:.2f} tokens per target call")
sys.exit(0 if same else 1)
EOF
  then
    mismatches=$((mismatches + 1))
  fi
done <<< "$prompts"

[ $n -gt 0 ] || setup_error "no smoke-test prompts"
if [ $mismatches -gt 0 ]; then
  fail "Mirror-SD changed the output on $mismatches of $n prompts: greedy decoding must be lossless (see $REPORT_DIR/smoke.jsonl)"
fi
echo "PASS: all validation checks passed and Mirror-SD matched autoregressive decoding on $n prompts"
