#!/usr/bin/env bash
# Re-capture the health-check test vectors in lb-core/testdata/health from
# real peers on loopback: dcmtk (echoscu/storescp/dcmqrscp), the PyPI `hl7`
# package's MLLP server (hl7_mllp_server.py) and `python3 -m http.server`.
# Every process started here is stopped by PID; all traffic stays on 127.0.0.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$HERE/../../lb-core/testdata/health" && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 50); do python3 -c "import socket,sys;socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# relay <upstream-port> <out-prefix> <client command...>: run the client through the recording relay
relay() {
  local up=$1 prefix=$2; shift 2
  python3 "$HERE/tcp_relay.py" --upstream 127.0.0.1:"$up" --out "$prefix" > "$WORK/relay.out" &
  local rp=$!
  for _ in $(seq 50); do grep -q PORT "$WORK/relay.out" && break; sleep 0.1; done
  local rport; rport=$(awk '/PORT/{print $2}' "$WORK/relay.out")
  "$@" "$rport" || true
  wait "$rp"
}

echo_client() { local calling=$1 called=$2 port=$3; echoscu -aet "$calling" -aec "$called" 127.0.0.1 "$port"; }

# --- DICOM ---------------------------------------------------------------
D=$OUT/dicom
P=$(free_port); storescp -aet STORESCP --ignore -od "$WORK" "$P" & SP=$!; PIDS+=($SP); wait_port "$P"
relay "$P" "$D/echo_ok" echo_client ECHOSCU STORESCP
bad_command() { python3 "$HERE/dicom_bad_command.py" --rq "$D/echo_ok.c2s.bin" --port "$1"; }
relay "$P" "$D/echo_abort" bad_command
kill "$SP"
P=$(free_port); storescp -aet STORESCP --refuse "$P" & SP=$!; PIDS+=($SP); wait_port "$P"
relay "$P" "$D/echo_refused" echo_client ECHOSCU STORESCP
kill "$SP"
P=$(free_port); storescp -aet STORESCP --ignore -xf "$D/storescp-no-verification.cfg" NoVerification "$P" & SP=$!; PIDS+=($SP); wait_port "$P"
relay "$P" "$D/echo_noverify" echo_client ECHOSCU STORESCP
kill "$SP"
mkdir -p "$WORK/qrdb"; P=$(free_port)
sed -e "s#@STORAGE@#$WORK/qrdb#" -e "s#^NetworkTCPPort.*#NetworkTCPPort = $P#" "$D/dcmqrscp.cfg" > "$WORK/qr.cfg"
dcmqrscp -c "$WORK/qr.cfg" --single-process "$P" & SP=$!; PIDS+=($SP); wait_port "$P"
relay "$P" "$D/echo_badcalled" echo_client ECHOSCU WRONGAE
kill "$SP"

# --- HL7 / MLLP ----------------------------------------------------------
H=$OUT/hl7
hl7_case() { # <name> <server flags...>
  local name=$1; shift
  mkdir -p "$WORK/hl7-$name"
  python3 "$HERE/hl7_mllp_server.py" --max-connections 1 --lifetime 20 --log "$WORK/hl7-$name" "$@" > "$WORK/hl7.out" &
  local hp=$!; PIDS+=($hp)
  for _ in $(seq 50); do grep -q PORT "$WORK/hl7.out" && break; sleep 0.1; done
  local port; port=$(awk '/PORT/{print $2}' "$WORK/hl7.out")
  python3 "$HERE/mllp_send.py" --port "$port" --file "$H/query.hl7" --out "$H/$name.s2c.bin" || true
  wait "$hp" || true
  cp "$WORK/hl7-$name/1.rx.bin" "$H/$name.c2s.bin"
}
hl7_case ack_aa
hl7_case ack_ae --ack AE
hl7_case ack_ar --ack AR
hl7_case ack_ca --ack CA
hl7_case ack_wrong_id --wrong-control-id

# --- HTTP ----------------------------------------------------------------
T=$OUT/http
mkdir -p "$WORK/www"; printf '<html><body>status: OK-HEALTHY</body></html>\n' > "$WORK/www/health.html"
P=$(free_port); (cd "$WORK/www" && exec python3 -m http.server --bind 127.0.0.1 "$P") > /dev/null 2>&1 & SP=$!; PIDS+=($SP); wait_port "$P"
http_get() { local path=$1 out=$2 port=$3; python3 "$HERE/http_get.py" --port "$port" --path "$path" --out "$out"; }
relay "$P" "$WORK/h200" http_get /health.html "$T/python_http_200.s2c.bin"
relay "$P" "$WORK/h404" http_get /missing.html "$T/python_http_404.s2c.bin"
cp "$WORK/h200.c2s.bin" "$T/python_http_200.c2s.bin"
kill "$SP"
echo "vectors written under $OUT"
