#!/bin/sh
# Runs the demo provider only in demo mode. With a real provider configured it serves nothing
# and idles, so that `docker compose up --wait` sees every long-running service running.
set -eu
case "${GPUHUB_AUTHENTICATOR:-demo}" in
  demo|"") ;;
  *) echo "demo-oidc: GPUHUB_AUTHENTICATOR=${GPUHUB_AUTHENTICATOR}: demo login is off; idling"
     exec sleep infinity ;;
esac
exec oidc-provider-mock --host 0.0.0.0 --port 9400 \
  --user-claims '{"sub": "demo", "email": "demo@localhost", "preferred_username": "demo", "groups": ["demo"]}'
