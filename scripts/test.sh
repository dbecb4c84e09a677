#!/usr/bin/env bash
# Runs the whole test suite, including GPU mode on Mesa's software Vulkan driver (lavapipe) when the
# machine has no GPU driver. Installs what it needs itself (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

have_vulkan_icd() {
  compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null
}

if ! have_vulkan_icd || ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  echo "== installing Mesa's Vulkan drivers (lavapipe) for GPU mode"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# Mesa complains about a missing XDG_RUNTIME_DIR; give it one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== cargo test"
cargo test --no-fail-fast --lib --bins --tests 2>&1
