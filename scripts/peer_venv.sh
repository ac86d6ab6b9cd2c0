#!/usr/bin/env bash
# The PaddleFormers benchmark peer lives in its own virtualenv: paddleformers 1.2.0 pins numpy 1.26 and
# its own transformers, which would break ours (README, Dependencies). Usage:
#   scripts/peer_venv.sh [/work/pf-venv]      then   python -m benchmarks.run --paddleformers-python DIR/bin/python
set -euo pipefail
venv="${1:-/work/pf-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "paddlepaddle==3.3.1" "paddleformers==1.2.0"
"$venv/bin/python" -c "import paddleformers, paddle; print('paddleformers', paddleformers.__version__, 'paddle', paddle.__version__)"
