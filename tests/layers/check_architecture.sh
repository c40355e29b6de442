#!/usr/bin/env bash
# ARCHITECTURE.md keeps up with the tree: every layer folder under
# service/src/ and every source file of the service and the client is named
# in it, and every source path it names exists.
#   tests/layers/check_architecture.sh [SOURCE_DIR]
set -euo pipefail
cd "${1:-$(dirname "$0")/../..}"
doc=ARCHITECTURE.md
bad=0
for dir in service/src/*/; do
  name=$(basename "$dir")
  grep -q "\*\*$name/\*\*" "$doc" ||
    { echo "$doc: no paragraph for the layer $name/ (**$name/**)"; bad=1; }
done
while read -r src; do
  grep -qF "\`$(basename "$src")\`" "$doc" ||
    { echo "$doc: $src is not named"; bad=1; }
done < <(find service/src client/src client/cli -name '*.c' | sort)
while read -r named; do
  found=$(find service client proto tests -path "*$named" -print -quit)
  [ -n "$found" ] || { echo "$doc: names $named, which is not in the tree"; bad=1; }
done < <(grep -o '`[A-Za-z0-9_./]*\.\(c\|h\|proto\)`' "$doc" | tr -d '`' | sort -u)
[ "$bad" = 0 ] && echo "$doc names every layer and source file; every path it names exists"
exit "$bad"
