#!/usr/bin/env bash
# daemon-bench.sh: the cost of `backupd serve` sitting idle with 20 scheduled jobs, and its API
# latency under a small load, against nginx serving the same bytes as static files.
#
# Usage: benches/daemon-bench.sh     (installs wrk and nginx with apt if missing; needs root for that)
# Environment:
#   BENCH_JOBS (20)        scheduled jobs in the config (schedules far from now: nothing runs)
#   BENCH_IDLE_SECS (60)   how long the idle daemon is watched
#   BENCH_WRK_SECS (10)    duration of each wrk run;  BENCH_WRK_CONN (16) connections; 2 threads
#   BENCH_WORK (/tmp/rackvault-daemon-bench)   scratch dir, wiped at start
#   BACKUPD (target/release/backupd)
# Output: a table on stdout (markdown).
#
# Idle cost: CPU seconds (utime+stime from /proc/PID/stat) used over BENCH_IDLE_SECS after the
# daemon is ready, peak and final RSS (VmHWM/VmRSS), threads. Latency: wrk's p50/p99 and requests/s
# for /api/v1/health, /api/v1/jobs, /api/v1/runs and /metrics; the peer is nginx serving a file
# holding the daemon's own response body for the same path (the cost of HTTP alone on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${BENCH_JOBS:-20}
IDLE=${BENCH_IDLE_SECS:-60}
WRK_SECS=${BENCH_WRK_SECS:-10}
CONN=${BENCH_WRK_CONN:-16}
WORK=${BENCH_WORK:-/tmp/rackvault-daemon-bench}
BACKUPD=${BACKUPD:-target/release/backupd}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x "$BACKUPD" ] || cargo build --release -q -p backupd
BACKUPD=$(realpath "$BACKUPD")

rm -rf "$WORK"; mkdir -p "$WORK/src" "$WORK/static/api/v1"
for i in $(seq 1 50); do echo "file $i" >"$WORK/src/f$i"; done
{
    echo 'state_dir = "state"'
    echo '[store]'; echo 'kind = "dir"'; echo 'path = "store"'
    echo '[serve]'; echo 'listen = "127.0.0.1:0"'; echo 'token = "bench-token-0123456789abcdef"'
    for i in $(seq 1 "$JOBS"); do
        printf '[[job]]\nname = "job%02d"\nsource = "src"\nschedule = "%d 4 1 1 *"\nstale_after = "7d"\n' "$i" "$i"
    done
} >"$WORK/rackvault.toml"
# Some history: one run of each job, so the API has runs and snapshots to list.
for i in $(seq 1 "$JOBS"); do "$BACKUPD" --config "$WORK/rackvault.toml" run "$(printf job%02d "$i")" >/dev/null; done

"$BACKUPD" --config "$WORK/rackvault.toml" serve 2>"$WORK/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; [ -n "${ngx:-}" ] && kill "$ngx" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do [ -f "$WORK/state/daemon.json" ] && break; sleep 0.05; done
addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"])' "$WORK/state/daemon.json")

ticks=$(getconf CLK_TCK)
cpu() { awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$pid/stat"; }
c0=$(cpu); t0=$(date +%s.%N)
sleep "$IDLE"
c1=$(cpu); t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
idle_cpu=$(python3 -c "print(f'{($c1-$c0)/$ticks:.3f}')")
wall=$(python3 -c "print(f'{$t1-$t0:.1f}')")

# nginx serving the daemon's own bodies.
for p in health jobs runs; do curl -fsS "http://$addr/api/v1/$p" >"$WORK/static/api/v1/$p"; done
curl -fsS "http://$addr/metrics" >"$WORK/static/metrics"
cat >"$WORK/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 256; }
http {
    access_log off;
    default_type application/json;
    client_body_temp_path $WORK/ngx-tmp;
    server { listen 127.0.0.1:18481; root $WORK/static; }
}
NGX
nginx -c "$WORK/nginx.conf" &
ngx=$!
sleep 0.5

wrk_run() { # url -> "p50_ms p99_ms req_per_s"
    wrk -t2 -c"$CONN" -d"${WRK_SECS}s" --latency "$1" | awk '
        / 50%/ {p50=$2} / 99%/ {p99=$2} /Requests\/sec/ {rps=$2}
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        END { printf "%.3f %.3f %.0f\n", ms(p50), ms(p99), rps }'
}

echo "| measure | backupd serve | nginx (same bytes) | ratio |"
echo "|---|---|---|---|"
echo "| idle: CPU over ${wall} s with $JOBS jobs | ${idle_cpu} s | | |"
echo "| idle: RSS now / peak | $((rss/1024)) MiB / $((hwm/1024)) MiB | | |"
echo "| idle: threads | $threads | | |"
for p in api/v1/health api/v1/jobs api/v1/runs metrics; do
    read -r b50 b99 brps < <(wrk_run "http://$addr/$p")
    read -r n50 n99 nrps < <(wrk_run "http://127.0.0.1:18481/$p")
    ratio=$(python3 -c "print(f'{$brps/$nrps:.2f}')")
    echo "| /$p p50 / p99, req/s | ${b50} / ${b99} ms, ${brps} | ${n50} / ${n99} ms, ${nrps} | ${ratio}× req/s |"
done
rss2=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "| RSS after the load | $((rss2/1024)) MiB | | |"
