#!/bin/sh
# HTTPS real servers for the health-check tests: one nginx (Debian's, run
# in the foreground without a master process, so killing its PID ends it)
# serving five TLS sites on consecutive ports from BASE, bound to ADDR:
#
#   BASE+0  TLS 1.2 only, ECDHE-RSA suites, RSA certificate
#   BASE+1  TLS 1.2 only, ECDHE-ECDSA suites, ECDSA certificate
#   BASE+2  TLS 1.3 only, ECDSA certificate
#   BASE+3  TLS 1.2 only, AES256-SHA256 only (RSA key exchange, CBC), RSA certificate
#   BASE+4  TLS 1.3 only, RSA certificate, a page WITHOUT the expected text
#
# Every other site serves /health.html containing "viewer: OK-HEALTHY".
# Certificates: lb-core/testdata/health/tls (test CA, SAN viewer.test and 127.0.0.1).
#
# usage: nginx_tls.sh DIR ADDR BASE   (DIR: scratch folder, created)
set -eu
dir=$1 addr=$2 base=$3
here=$(cd "$(dirname "$0")" && pwd)
certs="$here/../../lb-core/testdata/health/tls"
mkdir -p "$dir/ok" "$dir/degraded" "$dir/tmp"
echo "<html><body>viewer: OK-HEALTHY</body></html>" > "$dir/ok/health.html"
echo "<html><body>viewer: DEGRADED</body></html>" > "$dir/degraded/health.html"
site() { # port protocols ciphers cert root
  cat <<SITE
    server {
        listen $addr:$1 ssl;
        ssl_protocols $2;
        ssl_ciphers $3;
        ssl_certificate $certs/$4.pem;
        ssl_certificate_key $certs/$4.key;
        root $dir/$5;
    }
SITE
}
{
  cat <<HEAD
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 256; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
HEAD
  site $((base + 0)) TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384 rsa ok
  site $((base + 1)) TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305 ecdsa ok
  site $((base + 2)) TLSv1.3 DEFAULT ecdsa ok
  site $((base + 3)) TLSv1.2 AES256-SHA256 rsa ok
  site $((base + 4)) TLSv1.3 DEFAULT rsa degraded
  echo "}"
} > "$dir/nginx.conf"
exec nginx -p "$dir" -c "$dir/nginx.conf"
