#!/bin/sh
# Runs each cmocka test binary given as an argument, then the CLI tests, and
# prints one closing line "N passed, N failed, N skipped" over all test
# cases (cmocka counts a skipped test among the passed ones too).
passed=0
failed=0
skipped=0
for bin in "$@"; do
    out=$("$bin" 2>&1)
    status=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n 1)
    k=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -n 1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    skipped=$((skipped + ${k:-0}))
    if [ "$status" -ne 0 ] && [ -z "$f" ]; then
        echo "$bin exited with status $status"
        failed=$((failed + 1))
    fi
done
if [ -f tests/cli_test.sh ]; then
    out=$(BUILD="$BUILD" sh tests/cli_test.sh 2>&1)
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^cli: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(printf '%s\n' "$out" | sed -n 's/^cli: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-1}))
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
