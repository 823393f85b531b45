#!/usr/bin/env bash
# Makes a development certificate authority and one certificate per Bridle service, for mutual
# TLS between the services (the broker then knows which service is asking). For development
# and tests only: production certificates come from your PKI (cert-manager, Vault's PKI...).
#
#   deploy/certs/make-dev-ca.sh [OUT_DIR]      (default: .bridle/certs)
#
# Writes OUT_DIR/ca.pem, OUT_DIR/ca.key and, for each service S, OUT_DIR/S.pem and S.key with
# CN=S and subjectAltName DNS:S, DNS:localhost, IP:127.0.0.1, usable as server and client.
# Then set on every service:
#   BRIDLE_TLS_CERT=OUT_DIR/<service>.pem BRIDLE_TLS_KEY=OUT_DIR/<service>.key BRIDLE_TLS_CA=OUT_DIR/ca.pem
# and use https:// URLs between them. Existing files are kept (delete OUT_DIR to start over).
set -euo pipefail
out="${1:-.bridle/certs}"
days="${BRIDLE_CERT_DAYS:-825}"
mkdir -p "$out"
command -v openssl >/dev/null || { echo "openssl is required (apt-get install openssl)" >&2; exit 1; }

if [ ! -f "$out/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out/ca.key" -out "$out/ca.pem" -days "$days" \
    -subj "/CN=Bridle development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 600 "$out/ca.key"
fi

for svc in orchestrator router tools approvals secrets cli "$@"; do
  [ "$svc" = "$out" ] && continue
  [ -f "$out/$svc.pem" ] && continue
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out/$svc.key" -out "$out/$svc.csr" -subj "/CN=$svc" 2>/dev/null
  cat >"$out/$svc.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$svc,DNS:localhost,IP:127.0.0.1
EXT
  openssl x509 -req -in "$out/$svc.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -out "$out/$svc.pem" -days "$days" -extfile "$out/$svc.ext" 2>/dev/null
  rm -f "$out/$svc.csr" "$out/$svc.ext"
  chmod 600 "$out/$svc.key"
done
echo "certificates in $out" >&2
