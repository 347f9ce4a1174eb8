#!/usr/bin/env bash
# Formats the C++ tree with the repository's .clang-format (clang-format 14,
# Debian's clang-format package). With --check, changes nothing and exits 1
# listing the files that are not formatted (CI runs this).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v clang-format-14 >/dev/null || "$root/scripts/install_deps.sh"
mapfile -t files < <(git ls-files -- '*.cc' '*.h' | grep -v '^\.gpu/')
if [[ "${1:-}" == "--check" ]]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format-14 --style=file --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]})); then
    printf 'megabatch: not formatted (run scripts/format.sh): %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "megabatch: ${#files[@]} files formatted as .clang-format says" >&2
else
  clang-format-14 --style=file -i "${files[@]}"
fi
