#!/bin/sh
# run.sh - runs the fuzz targets (used by tests/fuzz/fuzz.mk).
#
#   run.sh fuzz   BUILD SECONDS TIMEOUT TARGET...  libFuzzer, each target SECONDS on
#                 tests/fuzz/corpus/T + regressions/T (new inputs go to BUILD/fuzz/corpus/T,
#                 crashes to BUILD/fuzz/artifacts/T/), one target at a time, niced
#   run.sh replay BUILD 0 TIMEOUT TARGET...        gcc driver over corpus/T and regressions/T
#   run.sh open   BUILD 0 TIMEOUT TARGET...        gcc driver over open/T (known-open bugs)
#
# A target with crashers in tests/fuzz/open/T (a bug known and not fixed yet)
# may crash in the fuzz mode without failing the run: it is reported as
# KNOWN-OPEN. Anything else that crashes fails.
set -u
mode=$1 build=$2 secs=$3 timeout=$4
shift 4
here=$(dirname "$0")
fail=0
summary=""
has_open() {
	[ -d "$here/open/$1" ] && [ -n "$(ls "$here/open/$1" | grep -v '^README')" ]
}
for t in "$@"; do
	case $mode in
	fuzz)
		bin=$build/fuzz/fuzz_$t
		mkdir -p "$build/fuzz/corpus/$t" "$build/fuzz/artifacts/$t"
		dirs="$build/fuzz/corpus/$t"
		for d in "$here/corpus/$t" "$here/regressions/$t"; do [ -d "$d" ] && dirs="$dirs $d"; done
		log=$build/fuzz/$t.log
		echo "== fuzz $t for ${secs}s (log $log)"
		# shellcheck disable=SC2086
		nice -n 19 "$bin" -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix="$build/fuzz/artifacts/$t/" $dirs >"$log" 2>&1
		rc=$?
		last=$(grep -E '^#[0-9]+' "$log" | tail -1)
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
		cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
		ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
		corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')
		line=$(printf '%-18s %10s execs %7s exec/s  cov %5s  ft %6s  corpus %5s' "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")
		if [ $rc -ne 0 ]; then
			grep -E 'ERROR: AddressSanitizer|runtime error|FUZZ_CHECK|ERROR: libFuzzer|Test unit written' "$log" | head -5
			if has_open "$t"; then
				line="$line  KNOWN-OPEN crash (tests/fuzz/open/$t)"
			else
				line="$line  FAILED (rc $rc, see $log)"
				fail=1
			fi
		fi
		summary="$summary$line
"
		;;
	replay | open)
		bin=$build/fuzz-replay/fuzz_$t
		if [ $mode = replay ]; then dirs=""; for d in "$here/corpus/$t" "$here/regressions/$t"; do [ -d "$d" ] && dirs="$dirs $d"; done
		else dirs=""; [ -d "$here/open/$t" ] && dirs="$here/open/$t"; fi
		[ -n "$dirs" ] || continue
		# shellcheck disable=SC2086
		if ! FUZZ_TIMEOUT=$timeout "$bin" $dirs; then
			echo "== $mode $t FAILED"
			fail=1
		fi
		;;
	esac
done
[ -n "$summary" ] && printf '\n%s' "$summary"
exit $fail
