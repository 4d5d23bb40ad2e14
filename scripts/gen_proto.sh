#!/usr/bin/env bash
# Regenerate the runtime's protobuf message classes (and their type stubs).
# Needs the dev dependency grpcio-tools. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc \
  -I src \
  --python_out=src \
  --pyi_out=src \
  src/fedstrata/runtime/proto/fedstrata.proto
