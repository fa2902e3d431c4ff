#!/usr/bin/env bash
# One accelerator end to end (benchmarks/gpu.py: SmolLM2-135M fine-tune, NPO full and LoRA,
# TOFU-protocol evaluation, bf16): builds .venv if needed (on Linux, PyPI's torch==2.13.0 wheel
# carries CUDA), checks that torch sees a GPU, and stops the run at 8 minutes.
#     bash benchmarks/gpu.sh [gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
make -s .venv/.installed
if ! .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu.sh: torch sees no CUDA device here; 'python benchmarks/gpu.py --tiny' runs the" \
         "same stages on the CPU" >&2
    exit 2
fi
cd benchmarks
exec timeout 480 ../.venv/bin/python gpu.py "$@"
