#!/bin/sh
# Same logic as the official traefik image's /entrypoint.sh.
set -e

# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
    set -- traefik "$@"
fi

# a Traefik subcommand ("docker run traefik:v3.7 version") runs through traefik
if traefik "$1" --help >/dev/null 2>&1; then
    set -- traefik "$@"
else
    echo "= '$1' is not a Traefik command: assuming shell execution." 1>&2
fi

exec "$@"
