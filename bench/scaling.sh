#!/usr/bin/env bash
# How party scales over worker processes on one PostgreSQL database: for each count of
# `party worker` processes, a fresh schema gets TASKS due no-op tasks, the processes drain it
# (`--until-idle`), and the script prints the drain rate and the connections each process held
# at its peak (from pg_stat_activity). Needs a release build of party and psql.
#
#   cargo build --release -p party-cli
#   bench/scaling.sh postgres://postgres@127.0.0.1:5432/test [TASKS] [CONCURRENCY] [PROCESSES...]
#
# Prints one line per process count; docs/SCALING.md has a run's figures.
set -euo pipefail

url=${1:?give a postgres:// URL}
tasks=${2:-40000}
concurrency=${3:-32}
shift $(( $# < 3 ? $# : 3 ))
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2 4 8)
party=${PARTY:-$(dirname "$0")/../target/release/party}
[ -x "$party" ] || { echo "no $party: run cargo build --release -p party-cli first" >&2; exit 1; }

sep='?'
[[ $url == *\?* ]] && sep='&'
base=${url%%\?*}
file=$(mktemp)
trap 'rm -f "$file"' EXIT
for _ in $(seq 1 "$tasks"); do echo '{"handler": "noop"}'; done >"$file"

printf '%-10s %12s %10s %16s %22s\n' processes tasks seconds "tasks/s" "connections/process"
for n in "${counts[@]}"; do
  schema="party_scaling_$$_$n"
  db="$url${sep}schema=$schema&application_name=party_scaling_$$"
  PARTY_LOG=warn "$party" --db "$db" add --from "$file" >/dev/null
  start=$(date +%s.%N)
  pids=()
  for _ in $(seq 1 "$n"); do
    PARTY_LOG=warn "$party" --db "$db" worker --until-idle --concurrency "$concurrency" \
      --prefetch "$concurrency" >/dev/null &
    pids+=($!)
  done
  peak=0
  while kill -0 "${pids[@]}" 2>/dev/null; do
    now=$(psql "$base" -Atc "SELECT count(*) FROM pg_stat_activity \
      WHERE application_name IN ('party_scaling_$$', 'party_scaling_$$ signal')" 2>/dev/null || echo 0)
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  done_count=$(psql "$base" -Atc "SELECT count(*) FROM \"$schema\".task_history WHERE state = 'done'")
  psql "$base" -qc "DROP SCHEMA \"$schema\" CASCADE" >/dev/null 2>&1
  awk -v n="$n" -v t="$done_count" -v s="$start" -v e="$end" -v p="$peak" \
    'BEGIN { d = e - s; printf "%-10d %12d %10.2f %16.0f %22.1f\n", n, t, d, t / d, p / n }'
done
