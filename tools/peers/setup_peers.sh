#!/usr/bin/env bash
# Create the virtual environments that nncodec's benchmarks run peer
# compressors in. Idempotent: an environment whose packages already import at
# the pinned versions is left alone.
#
#   tools/peers/setup_peers.sh            # all peers this script knows
#   tools/peers/setup_peers.sh zipnn      # only ZipNN
#
# Environments go to $NNCODEC_PEERS_DIR (default: .peers/ in the repository
# root). torch is pinned to the CPU build: a plain `pip install torch` pulls
# gigabytes of CUDA libraries. If a local wheel directory exists
# ($NNCODEC_WHEELS, default /opt/wheels) pip looks there first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${NNCODEC_PEERS_DIR:-$ROOT/.peers}"
PYTHON="${PYTHON:-python3}"
WHEELS="${NNCODEC_WHEELS:-/opt/wheels}"

TORCH_VERSION="2.13.0"
ZIPNN_VERSION="0.5.4"

pip_args=()
if [ -d "$WHEELS" ]; then
    pip_args+=(--find-links "$WHEELS")
fi
# Where the CPU-only torch wheel comes from: a local wheel directory (above), or
# PyTorch's CPU index if NNCODEC_TORCH_INDEX is set (for example
# https://download.pytorch.org/whl/cpu). Without either, pip takes PyPI's torch,
# which on Linux x86-64 depends on the CUDA libraries.
torch_index=()
if [ -n "${NNCODEC_TORCH_INDEX:-}" ]; then
    torch_index+=(--extra-index-url "$NNCODEC_TORCH_INDEX")
fi

make_venv() {  # name
    local dir="$PEERS_DIR/$1"
    if [ ! -x "$dir/bin/python" ]; then
        echo "setup_peers: creating $dir"
        "$PYTHON" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip
    fi
}

setup_zipnn() {
    local dir="$PEERS_DIR/zipnn"
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" - "$ZIPNN_VERSION" "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import zipnn, torch  # noqa: F401  (both must import)
ok = version("zipnn") == sys.argv[1] and torch.__version__.split("+")[0] == sys.argv[2]
sys.exit(0 if ok else 1)
PY
    then
        echo "setup_peers: zipnn $ZIPNN_VERSION already set up in $dir"
        return
    fi
    make_venv zipnn
    # torch first and pinned, so that zipnn's dependency on torch is already met.
    "$dir/bin/python" -m pip install -q ${pip_args[@]+"${pip_args[@]}"} ${torch_index[@]+"${torch_index[@]}"} "torch==$TORCH_VERSION"
    "$dir/bin/python" -m pip install -q ${pip_args[@]+"${pip_args[@]}"} ${torch_index[@]+"${torch_index[@]}"} \
        "torch==$TORCH_VERSION" "zipnn==$ZIPNN_VERSION" numpy
    "$dir/bin/python" -c "import zipnn, torch; print('setup_peers: zipnn ready, torch', torch.__version__)"
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(zipnn)
fi
mkdir -p "$PEERS_DIR"
for t in "${targets[@]}"; do
    case "$t" in
        zipnn) setup_zipnn ;;
        *) echo "setup_peers: unknown peer '$t' (known: zipnn)" >&2; exit 2 ;;
    esac
done
