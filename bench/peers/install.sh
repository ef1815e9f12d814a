#!/usr/bin/env bash
# `make bench-peers`: installs the toolchain for the benchmark peers from Debian's packages
# (golang-go, protobuf-compiler, grpc-gateway v1 and the Go libraries it builds against), then
# builds bench/peers/build/bin/switchboard-grpc-gateway. Needs root (apt-get). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
packages=(
  golang-go
  protobuf-compiler
  golang-grpc-gateway
  golang-github-grpc-ecosystem-grpc-gateway-dev
  golang-goprotobuf-dev
  golang-google-protobuf-dev
  golang-google-grpc-dev
  golang-google-genproto-dev
  wrk
)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash "$here/build.sh"
