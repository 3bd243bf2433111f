#!/usr/bin/env bash
# Install the coding agents that tests/realapps drives, at pinned versions, outside the repo.
# Idempotent: a package already present at its pinned version is not reinstalled.
# Usage: tests/realapps/install.sh            (installs into $CHATDEBUG_APPS_DIR or ~/.cache/chatdebug-apps)
set -euo pipefail

PREFIX="${CHATDEBUG_APPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chatdebug-apps}"

# Bump these together with the fixtures under tests/fixtures/apps/ (recapture with drive.py).
PACKAGES=(
  "@anthropic-ai/claude-code@2.1.332"
  "@openai/codex@0.171.0"
  "opencode-ai@1.18.33"
  "@google/gemini-cli@0.61.0"
)

mkdir -p "$PREFIX"
missing=()
for spec in "${PACKAGES[@]}"; do
  name="${spec%@*}"
  want="${spec##*@}"
  manifest="$PREFIX/node_modules/$name/package.json"
  have=""
  if [[ -f "$manifest" ]]; then
    have="$(node -p "require(process.argv[1]).version" "$manifest")"
  fi
  if [[ "$have" != "$want" ]]; then
    missing+=("$spec")
  fi
done

if ((${#missing[@]})); then
  # --include=optional: the native binaries ship as per-platform optional dependencies.
  npm install --prefix "$PREFIX" --no-fund --no-audit --include=optional --save-exact "${missing[@]}"
fi

echo "apps installed in $PREFIX"
for spec in "${PACKAGES[@]}"; do
  name="${spec%@*}"
  echo "  $name $(node -p "require(process.argv[1]).version" "$PREFIX/node_modules/$name/package.json")"
done
