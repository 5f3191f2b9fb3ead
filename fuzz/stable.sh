#!/bin/sh
# Coverage-guided fuzzing on the stable toolchain, without AddressSanitizer
# (the targets are safe Rust; what they look for is panics and broken
# round trips). Only this project's crates get libFuzzer's coverage
# instrumentation, through this script acting as RUSTC_WRAPPER, so the
# dependencies the test build already compiled in ../target are reused:
# `cargo fuzz` needs nightly and rebuilds every dependency instrumented.
#
#   fuzz/stable.sh TARGET [SECONDS]     (default 600)
set -eu
if [ "${PBS_FUZZ_WRAP:-}" = 1 ]; then
    rustc=$1
    shift
    case " $* " in
    *" --crate-name passbolt_sync "* | *" --crate-name passbolt_client "* | *" --crate-name config "* | *" --crate-name listing "* | \
        *" --crate-name secret "* | *" --crate-name dotenv "*)
        exec "$rustc" "$@" -Cpasses=sancov-module \
            -Cllvm-args=-sanitizer-coverage-level=4 \
            -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
            -Cllvm-args=-sanitizer-coverage-pc-table \
            -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing
        ;;
    esac
    exec "$rustc" "$@"
fi
dir=$(cd "$(dirname "$0")" && pwd)
target=$1
seconds=${2:-600}
max=8192
[ "$target" = listing ] && max=65536
cd "$dir"
PBS_FUZZ_WRAP=1 RUSTC_WRAPPER="$dir/stable.sh" CARGO_TARGET_DIR="$dir/../target" \
    cargo build --locked --bin "$target"
mkdir -p "corpus/$target" "artifacts/$target"
exec nice -n 19 "../target/debug/$target" "corpus/$target" "seeds/$target" \
    -max_total_time="$seconds" -max_len="$max" -artifact_prefix="artifacts/$target/" \
    -print_final_stats=1
