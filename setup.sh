#!/usr/bin/env bash
# Installs everything hop-live needs on a fresh Debian machine: system packages
# (PortAudio, espeak-ng, sox, PulseAudio for the virtual microphone, Chromium for
# the viewer tests, Mono and g++ to compile the Unity/Unreal OSC parsers in their
# tests) and a virtual environment in .venv with the pinned packages.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(libportaudio2 espeak-ng sox pulseaudio pulseaudio-utils chromium chromium-driver mono-mcs mono-runtime g++)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first and alone: the pinned CPU build must not be replaced by a CUDA build
# pulled in as someone else's dependency.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
