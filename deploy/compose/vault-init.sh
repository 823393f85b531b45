#!/bin/sh
# One-shot init of the compose stack's OpenBao dev server (runs in the OpenBao image, busybox sh):
# makes sure KV v2 is mounted at secret/, writes the example secrets the quickstart's routes name,
# and a read-only policy for the secrets broker. Idempotent: `docker-compose up` reruns it.
set -eu

tries=0
until bao status >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then echo "vault-init: OpenBao at $BAO_ADDR does not answer" >&2; exit 1; fi
  sleep 1
done

if ! bao secrets list -format=json | grep -q '"secret/"'; then
  bao secrets enable -path=secret kv-v2 >/dev/null
fi

# secret://openai-api-key (examples/quickstart/routes/openai.yaml). Read from stdin, so the key is
# never on a command line.
if [ -n "${OPENAI_API_KEY:-}" ]; then
  printf '%s' "$OPENAI_API_KEY" | bao kv put -mount=secret bridle/openai-api-key value=- >/dev/null
  echo "vault-init: wrote secret://openai-api-key"
else
  echo "vault-init: OPENAI_API_KEY is not set, so secret://openai-api-key is not written (the offline scripted route needs no key)"
fi

# What the broker needs, and no more: read Bridle's folder of the KV mount, and keep the OAuth
# grants of remote MCP servers in a folder of their own (`bridle mcp login`). (Compose gives the
# broker the dev root token for simplicity; the Helm chart uses this policy with Kubernetes auth.)
bao policy write bridle-secrets - >/dev/null <<'POLICY'
path "secret/data/bridle/*" {
  capabilities = ["read"]
}
path "secret/data/bridle-grants/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/bridle-grants/*" {
  capabilities = ["read", "delete"]
}
POLICY
echo "vault-init: done"
