#!/usr/bin/env bash
# The system packages the test suite needs beyond pip, installed only when missing (Debian/Ubuntu
# apt; as root, else through sudo): chromium (tests/test_serve.py drives the page in headless
# Chromium through Playwright). The demo's speech (espeak-ng) comes from the espeakng-loader
# wheel. The README's test command and .ci/run both call this script, so CI installs nothing the
# README does not.
set -euo pipefail
need=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]} (apt)" >&2
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
