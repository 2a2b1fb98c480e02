#!/bin/bash
# The find_files tool, run as the agent runs it: JSON on stdin, in a scratch repository.
set -u
run="$EVOLVE_TOOLS/find_files/run"
mkdir -p repo/pkg/sub repo/.git repo/pkg/__pycache__
touch repo/pkg/a.py repo/pkg/sub/b.py repo/pkg/c.txt repo/.git/d.py repo/pkg/__pycache__/e.py
cd repo
fail() { echo "FAIL: $*"; exit 1; }

out=$(echo '{"pattern": "*.py"}' | "$run") || fail "exit $? on a plain search"
[ "$out" = "$(printf 'pkg/a.py\npkg/sub/b.py')" ] || fail "expected pkg/a.py and pkg/sub/b.py, got: $out"

out=$(echo '{"pattern": "*.py", "path": "pkg/sub"}' | "$run") || fail "exit $? with a path"
[ "$out" = "pkg/sub/b.py" ] || fail "path not honoured: $out"

out=$(echo '{"pattern": "*.py", "max_results": 1}' | "$run")
echo "$out" | grep -q '^\[1 more' || fail "no notice of the cut: $out"

out=$(echo '{"pattern": "*.rs"}' | "$run") || fail "no match must not fail"
echo "$out" | grep -q 'no file matches' || fail "no-match message missing: $out"

echo '{"pattern": "*", "path": "missing"}' | "$run" >/dev/null && fail "a missing directory must fail"
echo "ok"
