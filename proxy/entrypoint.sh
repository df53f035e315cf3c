#!/bin/sh
# Starts Traefik with gpuhub's static configuration, built from the environment so that the same
# file serves both cases: Let's Encrypt when DOMAIN and ACME_EMAIL are set (HTTP-01, or DNS-01
# with ACME_DNS_PROVIDER), otherwise the local certificate made by the init service. Dynamic configuration (TLS options, headers, the
# certificate) is in proxy/dynamic/; routes to the hub and to user servers are written by the
# hub into rules.yaml in the same watched directory. The provider throttle is cut from Traefik's
# 2 s default to 100 ms: every spawn waits for its route, and 2 s was most of a route add
# (docs/proxy.md). The API entrypoint (the hub adds routes through it) listens only on the
# address of the alias proxy-api, which exists on the edge network alone: user servers, on the
# users' network, cannot even connect to it. The access log is an allow-list: the fields named
# below, the request path without its query string (which carries OAuth codes and ?token=), and
# no header at all (Authorization, Cookie, X-XSRFToken, Referer...); new fields Traefik adds
# later stay out too.
set -eu

fail() { echo "gpuhub proxy: configuration error: $1" >&2; exit 1; }

# The API entrypoint binds to proxy-api's address, which Docker's DNS knows once this container
# is on the network: at once with Compose, a moment after the task starts on Swarm.
waited=0
until getent hosts proxy-api >/dev/null 2>&1; do
  waited=$((waited + 1))
  [ "$waited" -lt 60 ] || fail "the network alias proxy-api does not resolve after 60 s (is the proxy on the edge network?)"
  sleep 1
done

if [ -n "${DOMAIN:-}" ] && [ -z "${ACME_EMAIL:-}" ]; then
  fail "ACME_EMAIL: is required with DOMAIN=${DOMAIN} (Let's Encrypt needs a contact address); set both or neither"
fi
if [ -z "${DOMAIN:-}" ] && [ -n "${ACME_EMAIL:-}" ]; then
  fail "DOMAIN: is required with ACME_EMAIL (the name to obtain a certificate for); set both or neither"
fi

set -- \
  --global.checknewversion=false \
  --global.sendanonymoususage=false \
  --log.level="${TRAEFIK_LOG_LEVEL:-INFO}" \
  --accesslog=true \
  --accesslog.format=json \
  --accesslog.fields.defaultmode=drop \
  --accesslog.fields.names.StartUTC=keep \
  --accesslog.fields.names.ClientHost=keep \
  --accesslog.fields.names.RequestMethod=keep \
  --accesslog.fields.names.RequestHost=keep \
  --accesslog.fields.names.RequestPath=keep \
  --accesslog.fields.names.RequestProtocol=keep \
  --accesslog.fields.names.DownstreamStatus=keep \
  --accesslog.fields.names.DownstreamContentSize=keep \
  --accesslog.fields.names.OriginStatus=keep \
  --accesslog.fields.names.Duration=keep \
  --accesslog.fields.names.RouterName=keep \
  --accesslog.fields.names.entryPointName=keep \
  --accesslog.fields.queryparameters.defaultmode=drop \
  --accesslog.fields.headers.defaultmode=drop \
  --entrypoints.web.address=:80 \
  --entrypoints.web.http.redirections.entrypoint.to=websecure \
  --entrypoints.web.http.redirections.entrypoint.scheme=https \
  --entrypoints.web.http.redirections.entrypoint.permanent=true \
  --entrypoints.websecure.address=:443 \
  --entrypoints.websecure.http.tls=true \
  --entrypoints.websecure.http.middlewares=gpuhub-headers@file \
  --entrypoints.api.address=proxy-api:8099 \
  --api=true \
  --api.dashboard=false \
  --ping=true \
  --providers.file.directory=/etc/traefik/dynamic \
  --providers.file.watch=true \
  --providers.providersThrottleDuration=100ms

if [ -n "${DOMAIN:-}" ]; then
  echo "gpuhub proxy: obtaining a certificate for ${DOMAIN} from ${ACME_CA_SERVER:-Let's Encrypt}"
  set -- "$@" \
    --certificatesresolvers.acme.acme.email="${ACME_EMAIL}" \
    --certificatesresolvers.acme.acme.storage=/letsencrypt/acme.json \
    --certificatesresolvers.acme.acme.caserver="${ACME_CA_SERVER:-https://acme-v02.api.letsencrypt.org/directory}" \
    --entrypoints.websecure.http.tls.certresolver=acme \
    --entrypoints.websecure.http.tls.domains[0].main="${DOMAIN}"
  # Per-user subdomains (GPUHUB_USER_SUBDOMAINS, off by default with DOMAIN; the init service
  # refuses them without ACME_DNS_PROVIDER): one certificate for DOMAIN and *.DOMAIN, which every
  # user's route inherits from the entrypoint, so no certificate is ordered per user.
  case "${GPUHUB_USER_SUBDOMAINS:-}" in
    1|true|yes|on) set -- "$@" --entrypoints.websecure.http.tls.domains[0].sans="*.${DOMAIN}" ;;
  esac
  if [ -n "${ACME_DNS_PROVIDER:-}" ]; then
    # DNS-01: the only challenge Let's Encrypt accepts for a wildcard. The provider's credentials
    # come from the ACME_DNS_ENV file, as <VAR>_FILE paths into ACME_DNS_SECRETS (lego reads both).
    echo "gpuhub proxy: DNS-01 challenge through ${ACME_DNS_PROVIDER}"
    set -- "$@" --certificatesresolvers.acme.acme.dnschallenge.provider="${ACME_DNS_PROVIDER}"
    if [ -n "${ACME_DNS_RESOLVERS:-}" ]; then
      set -- "$@" --certificatesresolvers.acme.acme.dnschallenge.resolvers="${ACME_DNS_RESOLVERS}"
    fi
    case "${ACME_DNS_PROPAGATION_CHECKS:-true}" in
      0|false|no|off) set -- "$@" --certificatesresolvers.acme.acme.dnschallenge.propagation.disablechecks=true ;;
    esac
  else
    set -- "$@" --certificatesresolvers.acme.acme.httpchallenge.entrypoint=web
  fi
else
  echo "gpuhub proxy: no DOMAIN set, serving the local self-signed certificate"
fi

exec traefik "$@"
