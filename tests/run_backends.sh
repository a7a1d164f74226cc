#!/usr/bin/env bash
# Run the test suite once per Keras backend: `make test` calls this.
#
#   tests/run_backends.sh PYTHON "tensorflow jax torch" SLOW_BACKEND JOBS [pytest args...]
#
# Cases marked `slow` run on SLOW_BACKEND only; cases marked `once` (they do not depend on the
# backend: parsing, files, messages) run on ONCE_BACKEND only (default torch, the shortest run). The two long runs, JAX (eager JAX compiles each
# operation on first use) and TensorFlow (the slow cases), are each split over SPLIT_WORKERS
# pytest-xdist workers (default 2; 0: none; SPLIT_BACKENDS names them), so that whichever ends last
# still has both cores: one process alone at the end left a core idle for minutes. TensorFlow's
# workers take whole files (--dist loadfile): it has no compilation cache shared between processes,
# and a file's tests share compiled programs (module caches, shared engines). JOBS=1 runs the backends one after the other,
# printing as it goes; JOBS>1 runs them side by side (most of a test's time is one-threaded
# tracing and compiling, so two cores serve three backends well), each into its own log under
# .test-logs/, printed whole when that backend ends. The exit status is 1 if any backend failed.
set -u
py=$1 backends=$2 slow=$3 jobs=$4
shift 4

run_one() {  # backend [pytest args...]
    local b=$1 marks=()
    shift
    [ "$b" = "$slow" ] || marks+=("not slow")
    [ "$b" = "${ONCE_BACKEND:-torch}" ] || marks+=("not once")
    local expr=""
    for m in "${marks[@]}"; do expr="${expr:+$expr and }$m"; done
    echo "=== KERAS_BACKEND=$b ==="
    # JAX only: a compilation cache for this run, so the same program compiled by many tests (each its
    # own jit wrapper, the same HLO) is compiled once; and threefry's random bits in their
    # non-partitionable layout: every new shape of a Keras weight compiles its initializer's
    # random.uniform, ~2 s each on this CPU in the partitionable (default) layout against ~0.3 s; the
    # numbers differ, not how they are drawn (partitioning needs several devices).
    local jax_env=()
    [ "$b" = jax ] && jax_env=(JAX_COMPILATION_CACHE_DIR="$PWD/.test-logs/jax-cache"
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
        JAX_THREEFRY_PARTITIONABLE=false)
    local split=()
    if [ "${SPLIT_WORKERS:-2}" -gt 0 ] && [[ " ${SPLIT_BACKENDS:-jax tensorflow} " == *" $b "* ]]; then
        split=(-n "${SPLIT_WORKERS:-2}")
        [ "$b" = tensorflow ] && split+=(--dist loadfile)
    fi
    # Most of the JAX and TensorFlow runs is XLA compiling small programs: without LLVM's
    # expensive passes (the same arithmetic, less optimised loops) test_render.py and
    # test_pictures.py took 7 % less on JAX.
    local xla="--xla_llvm_disable_expensive_passes=true ${XLA_FLAGS:-}"
    # Side by side (JOBS>1) the processes outnumber the cores: each runs its operations on one
    # thread (TEST_THREADS, default 1; 0: the libraries' defaults), so that idle threads spinning
    # in TensorFlow's, XLA's and PyTorch's pools do not take cycles from the other processes.
    local threads=()
    if [ "$jobs" -gt 1 ] && [ "${TEST_THREADS:-1}" -gt 0 ]; then
        local n=${TEST_THREADS:-1}
        threads=(TF_NUM_INTRAOP_THREADS=$n TF_NUM_INTEROP_THREADS=$n OMP_NUM_THREADS=$n)
        xla="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=$n $xla"
    fi
    env "${jax_env[@]}" "${threads[@]}" XLA_FLAGS="$xla" KERAS_BACKEND=$b TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3} "$py" -m pytest -q -m "$expr" "${split[@]}" "$@"
}

if [ "$jobs" -le 1 ]; then
    status=0
    for b in $backends; do run_one "$b" "$@" || status=1; done
    exit $status
fi

mkdir -p .test-logs
declare -A pid
for b in $backends; do
    # Each backend its own pytest cache (hypothesis' example database is safe to share).
    run_one "$b" "$@" -o cache_dir=".test-logs/cache-$b" >".test-logs/$b.log" 2>&1 &
    pid[$b]=$!
done
status=0
for b in $backends; do
    if wait "${pid[$b]}"; then result=passed; else result=FAILED; status=1; fi
    cat ".test-logs/$b.log"
    echo "=== KERAS_BACKEND=$b: $result ==="
done
exit $status
