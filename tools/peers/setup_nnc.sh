#!/usr/bin/env bash
# Create the virtual environment that runs Fraunhofer NNCodec 2.1.3 (the MPEG
# NNC reference coder, PyPI name "nncodec"), the lossy peer of nncodec's
# benchmarks. It lives in its own venv because it has our import name.
#
#   tools/peers/setup_nnc.sh
#   .peers/nnc/bin/python tools/peers/nnc_runner.py IN.npz --qp -38,-32,-26 --out DIR
#
# The venv goes to $NNCODEC_PEERS/nnc (or $NNCODEC_PEERS_DIR/nnc, the variable
# tools/peers/setup_peers.sh reads), default .peers/nnc in the repository root
# (.peers/ is git-ignored). Idempotent: a venv in which nncodec 2.1.3 and CPU
# torch 2.13.0 already import is left alone.
#
# Steps (see /work/shared/PEERS.md):
#   1. torch==2.13.0, the CPU build: from a local wheel directory
#      ($NNCODEC_WHEELS, default /opt/wheels) or PyTorch's CPU index if
#      NNCODEC_TORCH_INDEX is set. PyPI's plain torch pulls the CUDA libraries.
#   2. torchvision==0.28.0 nncodec==2.1.3: nncodec is an sdist and builds its
#      C++ entropy coder (a few minutes on two cores); torchvision is only
#      there to satisfy its requirement...
#   3. ...and is uninstalled again: PyPI's torchvision is CUDA-linked and fails
#      to import against the CPU torch. nnc_runner.py puts the stand-in package
#      tools/peers/torchvision_stub/ on sys.path instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${NNCODEC_PEERS:-${NNCODEC_PEERS_DIR:-$ROOT/.peers}}"
DIR="$PEERS_DIR/nnc"
PYTHON="${PYTHON:-python3}"
WHEELS="${NNCODEC_WHEELS:-/opt/wheels}"

TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"
NNC_VERSION="2.1.3"
STUB="$ROOT/tools/peers/torchvision_stub"

check() {  # exit 0 when the venv is complete
    # -P: the repository root must not shadow the peer's "nncodec" with ours
    [ -x "$DIR/bin/python" ] || return 1
    PYTHONPATH="$STUB" "$DIR/bin/python" -P - "$NNC_VERSION" "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
import torch
import nncodec.nn  # noqa: F401  (the C++ coder must load)
try:
    version("torchvision")
    sys.exit(1)  # the CUDA-linked torchvision must be gone
except PackageNotFoundError:
    pass
ok = version("nncodec") == sys.argv[1] and torch.__version__.split("+")[0] == sys.argv[2] \
    and not torch.version.cuda
sys.exit(0 if ok else 1)
PY
}

if check; then
    echo "setup_nnc: nncodec $NNC_VERSION already set up in $DIR"
    exit 0
fi

pip_args=()
if [ -d "$WHEELS" ]; then
    pip_args+=(--find-links "$WHEELS")
fi
if [ -n "${NNCODEC_TORCH_INDEX:-}" ]; then
    pip_args+=(--extra-index-url "$NNCODEC_TORCH_INDEX")
fi

mkdir -p "$PEERS_DIR"
if [ ! -x "$DIR/bin/python" ]; then
    echo "setup_nnc: creating $DIR"
    "$PYTHON" -m venv "$DIR"
    "$DIR/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$DIR/bin/python" -m pip install ${pip_args[@]+"${pip_args[@]}"})

# 1. CPU torch first, pinned, so that nothing below replaces it.
"${PIP[@]}" "torch==$TORCH_VERSION"
if "$DIR/bin/python" -c "import sys, torch; sys.exit(1 if torch.version.cuda else 0)"; then :; else
    echo "setup_nnc: the torch installed in $DIR is a CUDA build; put the CPU wheel in" \
         "\$NNCODEC_WHEELS or set NNCODEC_TORCH_INDEX=https://download.pytorch.org/whl/cpu" >&2
    exit 1
fi
# 2. nncodec (builds its C++ coder from the sdist); torch stays pinned.
"${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "nncodec==$NNC_VERSION"
# 3. drop the CUDA-linked torchvision; the stand-in replaces it at run time.
"$DIR/bin/python" -m pip uninstall -y torchvision

if check; then
    echo "setup_nnc: nncodec $NNC_VERSION ready in $DIR"
else
    echo "setup_nnc: nncodec was installed in $DIR but does not import; run" \
         "PYTHONPATH=$STUB $DIR/bin/python -P -c 'import nncodec.nn' to see why" >&2
    exit 1
fi
