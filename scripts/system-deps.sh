#!/usr/bin/env bash
# Debian packages the test suite uses: espeak-ng (extra voices), chromium + driver (browser tests),
# postgresql, redis-server and haproxy (cluster tests and deploy/cluster.py start their own),
# nftables (packet loss in a private network namespace: evaluation/faults.py).
# npm: test tools from npm (axe-core for the accessibility tests), pinned by tests/npm/package-lock.json
# and installed into the git-ignored tests/npm/node_modules; the page never loads them from a CDN.
# Installs only what is missing, and only when it can (root or sudo).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
install_test_tools() {
  [ -f "$root/tests/npm/node_modules/axe-core/axe.min.js" ] && return 0
  command -v npm >/dev/null 2>&1 || { echo "warning: npm missing; accessibility tests will skip" >&2; return 0; }
  npm ci --prefix "$root/tests/npm" --no-audit --no-fund --ignore-scripts >/dev/null
}
trap install_test_tools EXIT
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v npm >/dev/null 2>&1 || missing+=(npm)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "warning: cannot install ${missing[*]} (not root); tests needing them will skip" >&2; exit 0; fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
