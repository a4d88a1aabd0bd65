#!/usr/bin/env bash
# Multi-process local cluster on loopback: etcd (Debian's etcd-server), 3 scrollbackd storage
# nodes and a scrollback-router, each a separate process. Serves until Ctrl-C, then stops every
# process it started. Called by `scripts/run.sh --etcd`.
#
# Environment: DATA_DIR (default: a temporary directory, removed at exit),
#              LISTEN (router address, default 127.0.0.1:7600), SHARDS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=${DATA_DIR:-$(mktemp -d -t scrollback-etcd-XXXXXX)}
listen=${LISTEN:-127.0.0.1:7600}
shards=${SHARDS:-16}
mkdir -p "$data_dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -z "${DATA_DIR:-}" ] && rm -rf "$data_dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

etcd_port=$(free_port)
peer_port=$(free_port)
/usr/bin/etcd --name local --data-dir "$data_dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "local=http://127.0.0.1:$peer_port" --log-level error >"$data_dir/etcd.log" 2>&1 &
pids+=($!)
wait_port "$etcd_port"

nodes=node-1,node-2,node-3
for n in 1 2 3; do
  build/node/scrollbackd --node-id "node-$n" --data-dir "$data_dir/node-$n" \
    --etcd "127.0.0.1:$etcd_port" --bootstrap-shards "$shards" --bootstrap-nodes "$nodes" \
    >"$data_dir/node-$n.log" 2>&1 &
  pids+=($!)
done
build/router/scrollback-router --listen "$listen" --etcd "127.0.0.1:$etcd_port" \
  >"$data_dir/router.log" 2>&1 &
pids+=($!)
# Each process prints one line on stdout once it serves (its log lines go to stderr, same file).
for log in "$data_dir"/node-1.log "$data_dir"/node-2.log "$data_dir"/node-3.log "$data_dir"/router.log; do
  for _ in $(seq 1 300); do grep -q '^scrollback' "$log" 2>/dev/null && break; sleep 0.1; done
done

echo "Scrollback multi-process cluster (logs in $data_dir):"
echo "  etcd             127.0.0.1:$etcd_port"
cat "$data_dir"/node-*.log | grep '^scrollbackd' || true
grep '^scrollback-router' "$data_dir/router.log" || true
first_node=$(grep -h '^scrollbackd' "$data_dir/node-1.log" | grep -o 'ChatStore on [0-9.:]*' | awk '{print $3}')
router=$(grep -h '^scrollback-router' "$data_dir/router.log" | grep -o 'ChatStore on [0-9.:]*' | awk '{print $3}')
echo
echo "ChatStore API (schema/chatstore.capnp) on $router (router)."
echo "Status:  build/cli/scrollbackctl status --node $first_node"
echo "Stop with Ctrl-C."
wait
