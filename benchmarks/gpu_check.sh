#!/usr/bin/env bash
# Every number the GPU must show, in one command of at most 8 minutes on an H200: see --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [--work DIR] [--only STEP,...] OUTDIR

Measures on one CUDA GPU, each step under its own time limit, the whole within 8 minutes:
  - training throughput (bound / real / loop, b/a and b/c) of the five tasks at their GPU defaults
    and at the reference input sizes, trainer=gpu (bf16-mixed);
  - pose augmentation: Albumentations in workers against data.gpu_augment (kornia), and
    compile=true against eager for pose;
  - an 8-job embed sweep, one job after another and packed on the GPU (hydra/launcher=packed);
  - each task's GPU recipe for a short budget: wall time and the metric it reached.
It writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md (rewritten after every step, so a failed or
timed-out step leaves the others' results), OUTDIR/logs/<step>.log and OUTDIR/steps/. Datasets, runs
and sweep folders go to the work folder, not OUTDIR.

Options:
  --dry-run     every step on the CPU with tiny sizes (a few steps, tiny images, a 2-job sweep):
                checks that every command runs; nothing is judged
  --wheels DIR  a folder of wheels for the Python packages this machine lacks (hydra-core,
                omegaconf, albumentations, kornia, hydra-joblib-launcher, ...); installed with
                pip --no-index into <work>/site, put on PYTHONPATH (also: GPU_CHECK_WHEELS=DIR;
                ./.whl is used when present)
  --work DIR    datasets, runs and installed wheels (default: ${TMPDIR:-/tmp}/visionlab_gpu_check)
  --only STEPS  run only these steps (comma-separated names from OUTDIR/plan.json)
  -h, --help    this text

Python: ./.venv/bin/python when present (after `make install`), else python3 / python on PATH
(GPU_CHECK_PYTHON=... to choose). Time limits: GPU_CHECK_TOTAL_S (default 480 s).
EOF
}

given=("$@")
dry_run=0
wheels=${GPU_CHECK_WHEELS:-}
work=""
only=""
out=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    --wheels=*) wheels=${1#*=} ;;
    --work) work=${2:?--work needs a folder}; shift ;;
    --work=*) work=${1#*=} ;;
    --only) only=${2:?--only needs step names}; shift ;;
    --only=*) only=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [[ -z $out ]] || { echo "gpu_check: one OUTDIR only (got $out and $1)" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[[ -n $out ]] || { echo "gpu_check: OUTDIR is missing (see --help)" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
started=$(date +%s)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${work:-${TMPDIR:-/tmp}/visionlab_gpu_check}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
if (( dry_run )); then total=${GPU_CHECK_TOTAL_S:-1800}; else total=${GPU_CHECK_TOTAL_S:-480}; fi

# ---- Python and the packages it needs --------------------------------------------------------------
if [[ -n ${GPU_CHECK_PYTHON:-} ]]; then py=$GPU_CHECK_PYTHON
elif [[ -x .venv/bin/python ]]; then py=$repo/.venv/bin/python
elif command -v python3 >/dev/null; then py=$(command -v python3)
else py=$(command -v python || true)
fi
[[ -n $py ]] || { echo "gpu_check: no python3 or python on PATH" >&2; exit 2; }

# missing_packages required|optional: the distributions whose module is not found (space-separated);
# the optional ones only serve the packed sweep (Hydra's joblib launcher)
missing_packages() {
  "$py" - "$1" <<'EOF'
import importlib.util
import sys
required = {"torch": "torch", "torchvision": "torchvision", "lightning": "lightning",
            "torchmetrics": "torchmetrics", "tensorboard": "tensorboard", "hydra": "hydra-core",
            "omegaconf": "omegaconf", "albumentations": "albumentations", "kornia": "kornia", "pydantic": "pydantic",
            "yaml": "PyYAML", "scipy": "scipy", "matplotlib": "matplotlib", "PIL": "pillow", "jinja2": "jinja2"}
optional = {"hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher", "joblib": "joblib"}
need = required if sys.argv[1] == "required" else optional
missing = []
for module, dist in need.items():
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        missing.append(dist)
print(" ".join(missing))
EOF
}

missing=$(missing_packages required)
optional=$(missing_packages optional)
if [[ -n $missing && -z $wheels && -d .whl ]]; then wheels=$repo/.whl; fi
if [[ -n $missing$optional && -n $wheels ]]; then
  [[ -d $wheels ]] || { echo "gpu_check: --wheels $wheels is not a folder" >&2; exit 2; }
  shopt -s nullglob
  files=("$wheels"/*.whl)
  shopt -u nullglob
  (( ${#files[@]} )) || { echo "gpu_check: no .whl files in $wheels (missing: $missing $optional)" >&2; exit 2; }
  echo "gpu_check: installing ${#files[@]} wheels from $wheels into $work/site (missing: $missing $optional)"
  PIP_ROOT_USER_ACTION=ignore "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "${files[@]}"
  export PYTHONPATH="$work/site:$repo${PYTHONPATH:+:$PYTHONPATH}"
  missing=$(missing_packages required)
  optional=$(missing_packages optional)
  [[ -z $missing ]] || {
    echo "gpu_check: still missing after installing $wheels: $missing (add their wheels to that folder)" >&2
    exit 2; }
fi
if [[ -n $missing ]]; then
  echo "gpu_check: missing Python packages: $missing${optional:+ (and for the packed sweep: $optional)}; run \`make install\`, or pass --wheels DIR (a folder of their wheels)" >&2
  exit 2
fi
if [[ -n $optional ]]; then
  echo "gpu_check: warning: $optional not found: the packed sweep (hydra/launcher=packed) will fail; the other steps run" >&2
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

# ---- the steps ------------------------------------------------------------------------------------------
if (( ! dry_run )) && ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  echo "gpu_check: no CUDA device is visible to $py (torch.cuda.is_available() is False); --dry-run checks the commands on a CPU" >&2
  exit 2
fi
args=(plan --out "$out" --work "$work" --command "bash benchmarks/gpu_check.sh ${given[*]}")
if (( dry_run )); then args+=(--dry-run); fi
if [[ -n $only ]]; then args+=(--keep-steps); fi  # a rerun of some steps keeps the others' records
plan=$("$py" -m benchmarks.gpu_check "${args[@]}")
if [[ -n ${GPU_CHECK_PLAN:-} ]]; then plan=$(cat "$GPU_CHECK_PLAN"); fi  # tests: steps of their own
"$py" -m benchmarks.gpu_check report --out "$out"

report() {  # step rc wall limit: record the step, rewrite gpu_check.json / gpu_check.md
  "$py" -m benchmarks.gpu_check report --out "$out" --step "$1" --rc "$2" --wall "$3" --limit "$4" \
    || echo "gpu_check: the report after step $1 failed (see above)" >&2
}

failed=0
reserve=10  # seconds kept for the last report
while IFS=$'\t' read -r name budget cmd; do
  [[ -n $name ]] || continue
  if [[ -n $only && ",$only," != *",$name,"* ]]; then continue; fi
  left=$(( total - ($(date +%s) - started) - reserve ))
  limit=$(( budget < left ? budget : left ))
  if (( left < 5 )); then
    echo "gpu_check: $name skipped: no time left (${total} s in all)"
    report "$name" -1 0 0; failed=1; continue
  fi
  echo "gpu_check: $name (at most ${limit} s)"
  t0=$(date +%s%N)
  rc=0
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$out/logs/$name.log" 2>&1 </dev/null || rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  wall=$(printf '%d.%03d' $(( ms / 1000 )) $(( ms % 1000 )))
  case $rc in
    0) echo "gpu_check: $name ok in ${wall%.*} s" ;;
    124|137) echo "gpu_check: $name stopped at its limit of ${limit} s (log: $out/logs/$name.log)"; failed=1 ;;
    *) echo "gpu_check: $name failed (exit $rc; log: $out/logs/$name.log)"; tail -n 3 "$out/logs/$name.log" | sed 's/^/    /'; failed=1 ;;
  esac
  report "$name" "$rc" "$wall" "$limit"
done <<<"$plan"

echo "gpu_check: $(( $(date +%s) - started )) s; results: $out/gpu_check.md and $out/gpu_check.json"
exit $failed
