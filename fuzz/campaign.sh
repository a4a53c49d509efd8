#!/bin/sh
# Runs one fuzz target for a while at low priority, with its checked-in seeds as a second corpus
# directory (libFuzzer writes new inputs only to the first, fuzz/corpus/<target>, git-ignored).
#
#   fuzz/campaign.sh TARGET [SECONDS [LIBFUZZER_ARGS...]]   # default 600 s, the issue's minimum
#
# Extra arguments go to libFuzzer, e.g. `-len_control=0 -max_len=2048` for call_session.
#
# Stable toolchain, no sanitizer. For AddressSanitizer use
#   RUSTC_BOOTSTRAP=1 SANITIZER=address fuzz/campaign.sh TARGET
set -eu
target=$1
seconds=${2:-600}
shift; [ $# -gt 0 ] && shift
cd "$(dirname "$0")"
mkdir -p "corpus/$target" logs
nice -n 19 cargo fuzz run --sanitizer "${SANITIZER:-none}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1 "$@" 2>&1 | tee "logs/$target.log" | tail -n 40
