#!/usr/bin/env bash
# Verify a GPU machine in one command: install, test the compiled kernels, benchmark, tabulate.
#
#   bash benchmarks/gpu-check.sh            # every step, in order
#   bash benchmarks/gpu-check.sh test bench  # only the steps named
#
# For a machine that already has torch (CUDA build) and triton; nothing is downloaded except
# what `pip install --no-deps -e .` needs (nothing, on the project's GPU image). Steps, each
# well under 10 minutes on one H100 and about 20 minutes in all:
#   install  pip install --no-deps -e .
#   test     the whole test suite on CUDA tensors, kernels compiled (TRITON_INTERPRET unset)
#   bench    actkit bench --act all --device cuda --quick   -> benchmarks/results/<gpu>.json
#   host     actkit bench --host-cost --act all --device cuda -> benchmarks/results/<gpu>-host-cost.json
#   glu      actkit bench-glu-block --device cuda, bf16, a LLaMA-7B-sized MLP block, both layouts
#            (Liger-Kernel#1330: the compile paths)      -> benchmarks/results/<gpu>-glu-block-{pair,split}.json
#   table    both files as markdown                         -> benchmarks/results/<gpu>.md
# <gpu> is the device name in lower case with dashes (nvidia-h100-80gb-hbm3). An interrupted
# bench step resumes where it stopped when run again. Logs go to benchmarks/results/<gpu>-<step>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
unset TRITON_INTERPRET

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(install test bench host glu table)

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-check: torch sees no CUDA GPU here (torch.cuda.is_available() is False)" >&2
  exit 2
fi
gpu=$("$PYTHON" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
out=benchmarks/results
mkdir -p "$out"
echo "gpu-check on $gpu: steps ${steps[*]}"

actkit_cmd() { "$PYTHON" -m actkit.cli.main "$@"; }

bench_into() {  # bench_into FILE ARGS...: a fresh sweep, or the rest of an interrupted one
  local file=$1; shift
  if [ -f "$file" ] && "$PYTHON" -c "import json, sys; sys.exit(0 if json.load(open('$file')).get('complete') else 1)"; then
    echo "$file is complete; delete it to measure again"
  elif [ -f "$file" ]; then
    actkit_cmd bench "$@" --json "$file" --resume
  else
    actkit_cmd bench "$@" --json "$file"
  fi
}

for step in "${steps[@]}"; do
  log="$out/$gpu-$step.log"
  start=$(date +%s)
  case "$step" in
    install) "$PYTHON" -m pip install --no-deps -e . 2>&1 | tee "$log" ;;
    test)    "$PYTHON" -m pytest -q -p no:cacheprovider 2>&1 | tee "$log" ;;
    bench)   bench_into "$out/$gpu.json" --act all --device cuda --quick 2>&1 | tee "$log" ;;
    host)    bench_into "$out/$gpu-host-cost.json" --host-cost --act all --device cuda 2>&1 | tee "$log" ;;
    glu)
      for layout in pair split; do
        actkit_cmd bench-glu-block --device cuda --dtype bf16 --tokens 8192 --hidden 4096 --ffn 11008 \
          --layout "$layout" --json "$out/$gpu-glu-block-$layout.json" --overwrite
      done 2>&1 | tee "$log" ;;
    table)
      {
        echo "<!-- $gpu: actkit bench --act all --device cuda --quick; actkit bench --host-cost --act all --device cuda -->"
        actkit_cmd bench-table "$out/$gpu.json"
        echo
        actkit_cmd bench-table "$out/$gpu-host-cost.json"
      } > "$out/$gpu.md"
      echo "wrote $out/$gpu.md" | tee "$log" ;;
    *) echo "gpu-check: unknown step '$step' (install, test, bench, host, glu, table)" >&2; exit 2 ;;
  esac
  echo "gpu-check: $step done in $(( $(date +%s) - start )) s"
done
