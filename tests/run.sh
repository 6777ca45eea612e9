#!/bin/sh
# Runs every test layer and ends with one line: "N passed, N failed".
# Each layer prints its own "N passed, N failed" line last; this sums them.
set -u
BUILD=${BUILD:-build}
export BUILD
total_p=0
total_f=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

tally() { # name, command...
	name=$1
	shift
	echo "== $name"
	"$@" >"$log" 2>&1
	rc=$?
	cat "$log"
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n1)
	if [ -z "$line" ]; then
		echo "  $name: no result line (exit $rc), counted as one failure"
		total_f=$((total_f + 1))
		return
	fi
	p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
	f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "  $name: exit $rc with no failure counted, counted as one failure"
		f=1
	fi
	total_p=$((total_p + p))
	total_f=$((total_f + f))
}

for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	tally "unit $(basename "$t")" "$t"
done

tally "integration" /usr/bin/python3 tests/integration/run.py

echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
