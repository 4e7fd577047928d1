#!/usr/bin/env bash
# Print the path of a working Python of the given version (e.g. 3.12):
# `pythonX.Y` on PATH if it runs, else a pyenv-installed one.
set -euo pipefail
version="$1"
candidates=("python$version")
if command -v pyenv >/dev/null 2>&1; then
    root="$(pyenv root)"
    for dir in "$root"/versions/"$version"*; do
        [ -x "$dir/bin/python$version" ] && candidates+=("$dir/bin/python$version")
    done
fi
for candidate in "${candidates[@]}"; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then
        command -v "$candidate" || echo "$candidate"
        exit 0
    fi
done
echo "No working Python $version found (tried: ${candidates[*]})" >&2
exit 1
