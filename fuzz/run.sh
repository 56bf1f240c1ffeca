#!/usr/bin/env bash
# Runs every libFuzzer target of a -Dfuzzing=true build for FUZZ_SECONDS
# each (default 60), from its seed corpus fuzz/<target>/ and a working corpus
# under the build directory (new inputs never land in the source tree), with
# its dictionary when there is one. Prints execs and crashes per target;
# exits 1 if any target crashed (the inputs are left as BUILD/crash-<target>-*).
set -u
build=${1:-build-fuzz}
secs=${FUZZ_SECONDS:-60}
here=$(cd "$(dirname "$0")" && pwd)
# The targets are the ones fuzz/meson.build built; FUZZ_TARGETS narrows them.
targets=${FUZZ_TARGETS:-$(find "$build/fuzz" -maxdepth 1 -type f -executable -name 'fuzz_*' \
  -printf '%f\n' | sed 's/^fuzz_//' | sort)}
status=0
printf '%-15s %14s %8s\n' target execs crashes
for t in $targets; do
  work="$build/corpus/$t"
  mkdir -p "$work"
  dict=()
  [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  "$build/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$build/crash-$t-" "${dict[@]}" "$work" "$here/$t" \
    > "$build/fuzz-$t.log" 2>&1
  execs=$(grep -o 'number_of_executed_units: [0-9]*' "$build/fuzz-$t.log" | awk '{print $2}')
  crashes=$(ls "$build"/crash-"$t"-* 2>/dev/null | wc -l)
  printf '%-15s %14s %8s\n' "$t" "${execs:-?}" "$crashes"
  [ "$crashes" -gt 0 ] && status=1
done
exit $status
