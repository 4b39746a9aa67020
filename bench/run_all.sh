#!/bin/sh
# Run the whole benchmark suite, then refresh the tables in docs/PERFORMANCE.md and the plot.
#
#   bench/run_all.sh                      # everything, about 15 min on 2 cores
#   TARGETS="chatserver" bench/run_all.sh # only re-measure chatserver (tables keep the
#                                         # references' latest runs)
#
# Knobs (environment): TARGETS, RUNS (runs per configuration, >= 3 for medians), FANOUT_N,
# K (messages per fan-out run), K_LARGE_N and LARGE_N (a smaller K for the largest N keeps
# the slow targets under the 2-minute run limit), PROCS_LARGE_N (tool worker processes
# at N >= LARGE_N), VERIFY_LARGE_N (1 subscriber in this many reads its data at N >= LARGE_N),
# CONN_C, CONN_RUNS, FILE_MIB, FILE_RUNS, PERSIST
# (1 = chatserver with persistence, the default; 0 = --memory), LOADTOOL_ARGS (extra flags),
# EXTRAS (1 = also asyncio-perline at N < LARGE_N and chatserver --memory; 0 = skip),
# FLOOD (1 = also the flood: fan-out with no window, --window 0, at FLOOD_N with one
# publisher and with FLOOD_PUBLISHERS at once; 0 = skip), FLOOD_N, FLOOD_K, FLOOD_PUBLISHERS.
# Rounds are interleaved (run 1 of every target, then run 2, ...) so that a noisy period on
# this shared machine does not hit one target only.
set -u
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-"threaded asyncio redis inspircd chatserver"}
RUNS=${RUNS:-3}
FANOUT_N=${FANOUT_N:-"10 100 1000"}
K=${K:-20000}
LARGE_N=${LARGE_N:-1000}
K_LARGE_N=${K_LARGE_N:-20000}
PROCS_LARGE_N=${PROCS_LARGE_N:-2}   # subscriber worker processes at N >= LARGE_N: with one,
                                    # the tool cannot read ~1 GB/s of frames and the probe
                                    # measures its own backlog (docs/PERFORMANCE.md)
VERIFY_LARGE_N=${VERIFY_LARGE_N:-10} # at N >= LARGE_N, 1 subscriber in this many reads and
                                    # counts its data; the others let the kernel drop it and
                                    # count bytes (loadtool.py --verify-every; 1 = all read)
FILE_RUNS=${FILE_RUNS:-3}
CONN_C=${CONN_C:-"1000 5000 10000"}
CONN_RUNS=${CONN_RUNS:-3}
FILE_MIB=${FILE_MIB:-1024}
PERSIST=${PERSIST:-1}
FLOOD=${FLOOD:-1}
FLOOD_N=${FLOOD_N:-"100 1000"}
FLOOD_K=${FLOOD_K:-50000}   # the slowest target (inspircd, ~4,800 msg/s at N = 100) stays
                                    # well under the 2-minute run limit
FLOOD_PUBLISHERS=${FLOOD_PUBLISHERS:-10}
LOADTOOL_ARGS=${LOADTOOL_ARGS:-}
export BENCH_TAG=${BENCH_TAG:-suite-$(date -u +%Y%m%dT%H%M%SZ)}

status=0
available_targets=""
for t in $TARGETS; do
    if [ "$t" = redis ] && ! command -v redis-server >/dev/null 2>&1; then
        echo "SKIP redis: redis-server not installed (apt-get install -y redis-server)"
        continue
    fi
    if [ "$t" = inspircd ] && ! command -v inspircd >/dev/null 2>&1 \
            && [ ! -x /usr/sbin/inspircd ]; then
        echo "SKIP inspircd: inspircd not installed (apt-get install -y inspircd)"
        continue
    fi
    if [ "$t" = chatserver ] && [ ! -f chatserver.py ]; then
        echo "SKIP chatserver: chatserver.py not found"
        continue
    fi
    available_targets="$available_targets $t"
done
persist_flag=""
[ "$PERSIST" = 0 ] && persist_flag="--no-persist"

lt() {
    # shellcheck disable=SC2086
    python3 bench/loadtool.py "$@" $persist_flag $LOADTOOL_ARGS || status=1
}

echo "suite $BENCH_TAG: targets:$available_targets, $RUNS runs each"
run=1
while [ "$run" -le "$RUNS" ]; do
    for n in $FANOUT_N; do
        k=$K
        procs=1
        verify=1
        [ "$n" -ge "$LARGE_N" ] && k=$K_LARGE_N && procs=$PROCS_LARGE_N && verify=$VERIFY_LARGE_N
        for t in $available_targets; do
            lt fanout --target "$t" -n "$n" -k "$k" -p 100 --procs "$procs" --verify-every "$verify"
        done
    done
    if [ "$FLOOD" = 1 ]; then
        for pubs in 1 $FLOOD_PUBLISHERS; do
            for n in $FLOOD_N; do
                procs=1
                verify=1
                [ "$n" -ge "$LARGE_N" ] && procs=$PROCS_LARGE_N && verify=$VERIFY_LARGE_N
                for t in $available_targets; do
                    lt fanout --target "$t" -n "$n" -k "$FLOOD_K" -p 100 --window 0 \
                        --publishers "$pubs" --procs "$procs" --verify-every "$verify"
                done
            done
        done
    fi
    if [ "$run" -le "$CONN_RUNS" ]; then
        for c in $CONN_C; do
            for t in $available_targets; do
                lt connscale --target "$t" -c "$c"
            done
        done
    fi
    run=$((run + 1))
done
case " $available_targets " in
    *" chatserver "*) lt filerelay --target chatserver --size-mib "$FILE_MIB" --runs "$FILE_RUNS" ;;
esac

# Extras (EXTRAS=0 skips them): the naive asyncio variant where it finishes within the run
# limit, and chatserver without persistence (--memory) to show what persistence costs.
if [ "${EXTRAS:-1}" = 1 ]; then
    for n in $FANOUT_N; do
        [ "$n" -ge "$LARGE_N" ] && continue
        case " $TARGETS " in *" asyncio "*)
            lt fanout --target asyncio-perline -n "$n" -k "$K" -p 100 --runs "$RUNS" ;;
        esac
    done
    case " $available_targets " in *" chatserver "*)
        if [ "$PERSIST" = 1 ]; then
            for n in $FANOUT_N; do
                k=$K
                procs=1
                verify=1
                [ "$n" -ge "$LARGE_N" ] && k=$K_LARGE_N && procs=$PROCS_LARGE_N && verify=$VERIFY_LARGE_N
                python3 bench/loadtool.py fanout --target chatserver --no-persist -n "$n" -k "$k" \
                    -p 100 --procs "$procs" --verify-every "$verify" --runs "$RUNS" \
                    $LOADTOOL_ARGS || status=1
            done
        fi ;;
    esac
fi

python3 bench/report.py --update-doc docs/PERFORMANCE.md || status=1
python3 bench/plot.py || status=1
exit $status
