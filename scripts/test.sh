#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace
# (unit tests, and integration tests that start the real clawgate binary and mock backend).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace "$@"
