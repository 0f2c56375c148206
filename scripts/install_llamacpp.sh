#!/usr/bin/env bash
# Installs a real llama.cpp runtime for the GGUF parity check: the prebuilt linux-x64 CPU build
# that npm's node-llama-cpp ships (no compiling), into a cache folder. Does nothing when it is
# already there. tunesmith finds it in $TUNESMITH_LLAMACPP_DIR, default
# ${XDG_CACHE_HOME:-~/.cache}/tunesmith/llama.cpp/node-llama-cpp-VERSION (docs/export.md).
#
# Why this build: llama-cpp-python compiles from source (over 13 minutes on 2 cores), and the
# prebuilt PyPI wheels tried (llama-cpp-py-sync) need glibc 2.38, newer than Debian 12's 2.36.
set -euo pipefail
VERSION=3.22.1
DIR="${TUNESMITH_LLAMACPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tunesmith/llama.cpp/node-llama-cpp-$VERSION}"
installed() {
  [ -f "$DIR/node_modules/node-llama-cpp/package.json" ] \
    && grep -q "\"version\": \"$VERSION\"" "$DIR/node_modules/node-llama-cpp/package.json" \
    && [ -d "$DIR/node_modules/@node-llama-cpp/linux-x64/bins" ]
}
if installed && command -v node >/dev/null; then
  echo "llama.cpp (node-llama-cpp $VERSION) is already installed in $DIR"
  exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_llamacpp.sh needs node and npm (apt-get install nodejs npm, as root)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends nodejs npm
fi
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name": "tunesmith-llamacpp", "private": true}' > package.json
# --ignore-scripts: node-llama-cpp's postinstall would look for a GPU build or compile; the
# linux-x64 package holds the prebuilt CPU binaries. --omit=optional skips the CUDA/Vulkan builds.
npm install --no-audit --no-fund --ignore-scripts --omit=optional \
  "node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64@$VERSION"
installed
echo "llama.cpp (node-llama-cpp $VERSION) installed in $DIR"
