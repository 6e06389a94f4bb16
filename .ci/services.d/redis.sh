#!/usr/bin/env bash
# Installs redis-server from Debian's packages if missing and starts it on a
# loopback port without persistence, for the redislimit tests.
set -euo pipefail
PORT="${EZTHROTTLE_REDIS_PORT:-6379}"
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq redis-server >/dev/null
fi
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  echo "redis already running on 127.0.0.1:$PORT"
  exit 0
fi
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --logfile /tmp/ezthrottle-redis.log --pidfile /tmp/ezthrottle-redis.pid
for _ in $(seq 1 50); do
  if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
    echo "redis started on 127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.1
done
echo "redis did not start; log:" >&2
cat /tmp/ezthrottle-redis.log >&2 || true
exit 1
