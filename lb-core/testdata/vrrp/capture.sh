#!/bin/sh
# Captures keepalived VRRPv3 adverts in a private namespace pair.
OUT=${OUT:-$(mktemp -d)}
set -e
NS=kacap$$
ip netns add ${NS}a; ip netns add ${NS}b
ip -n ${NS}a link add eth0 type veth peer name eth0 netns ${NS}b
ip -n ${NS}a addr add 10.99.0.2/24 dev eth0; ip -n ${NS}a link set eth0 up; ip -n ${NS}a link set lo up
ip -n ${NS}b addr add 10.99.0.3/24 dev eth0; ip -n ${NS}b link set eth0 up
cap() { # name, conf
  printf '%s' "$2" > $OUT/$1.conf
  ip netns exec ${NS}b timeout 7 tcpdump -i eth0 -c 2 -w $OUT/$1.pcap 'ip proto 112' >/dev/null 2>&1 &
  sleep 0.5
  ip netns exec ${NS}a keepalived -n -l -D -f $OUT/$1.conf -p $OUT/$1.pid -r $OUT/$1.vpid >$OUT/$1.log 2>&1 &
  KP=$!
  wait %1 || true
  kill $KP; wait $KP 2>/dev/null || true
}
cap mcast 'global_defs { vrrp_version 3 }
vrrp_instance VI_1 { state BACKUP
 interface eth0
 virtual_router_id 51
 priority 100
 advert_int 0.1
 virtual_ipaddress {
  10.99.0.100/24
  10.99.0.101/24
 }
}'
cap unicast 'global_defs { vrrp_version 3 }
vrrp_instance VI_1 { state BACKUP
 interface eth0
 virtual_router_id 52
 priority 120
 advert_int 1
 unicast_peer { 10.99.0.3 }
 virtual_ipaddress { 10.99.0.100/24 }
}'
cap three 'global_defs { vrrp_version 3 }
vrrp_instance VI_1 { state BACKUP
 interface eth0
 virtual_router_id 53
 priority 200
 advert_int 0.5
 virtual_ipaddress {
  10.99.0.100/24
  10.99.0.102/24
  10.99.0.103/24
 }
}'
ip netns del ${NS}a; ip netns del ${NS}b
# keepalived 2.2.7 (Debian 12) has no v3_checksum_as_v2 (2.2.8 added it):
# the VRRPv2-style checksum vector comes from this independent encoder.
python3 - > "$OUT/v2-checksum.hex" <<'PY'
import struct
vrrp = bytearray(struct.pack("!BBBBHH", 0x31, 53, 200, 3, 50, 0) + bytes([10,99,0,100, 10,99,0,102, 10,99,0,103]))
s = sum(struct.unpack("!%dH" % (len(vrrp)//2), vrrp))
while s >> 16: s = (s & 0xffff) + (s >> 16)
vrrp[6:8] = struct.pack("!H", ~s & 0xffff)
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0xc0, 20+len(vrrp), 0, 0, 255, 112, 0, bytes([10,99,0,2]), bytes([224,0,0,18])))
s = sum(struct.unpack("!10H", ip))
while s >> 16: s = (s & 0xffff) + (s >> 16)
ip[10:12] = struct.pack("!H", ~s & 0xffff)
eth = bytes.fromhex("01005e000012" "1a7f7259a87e" "0800")
print((eth + ip + vrrp).hex())
PY
