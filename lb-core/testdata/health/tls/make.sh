#!/bin/sh
# Test certificates for the HTTPS health checks (unit tests, live tests
# against nginx, end-to-end tests). Test keys only: never use them elsewhere.
# Regenerate with `sh make.sh` in this folder (needs openssl).
set -eu
days=36500
san="subjectAltName=DNS:viewer.test,IP:127.0.0.1"
ext() { printf '%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san"; }
ca() { # name
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.pem" -days $days -subj "/CN=$1 test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # name keyalg-args...
  name=$1; shift
  openssl req -newkey "$@" -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=viewer.test" 2>/dev/null
  ext > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" \
    -days $days -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
ca ca
ca other-ca
leaf rsa rsa:2048
leaf ecdsa ec -pkeyopt ec_paramgen_curve:P-256
rm -f ca.srl ca.key other-ca.key
for c in rsa ecdsa; do
  openssl x509 -in $c.pem -outform der | openssl dgst -sha256 -r | cut -d' ' -f1 > $c.sha256
done
