#!/bin/sh
# PostgreSQL with TLS when infra/certs/ holds server.crt and server.key (mounted at
# /certs): PostgreSQL wants its key owned by its own user and readable by no one else,
# which a file mounted from the host is not, so a copy is made with those rights. Without
# them the server speaks plain TCP, as inside the compose network it may.
set -eu
if [ -f /certs/server.crt ] && [ -f /certs/server.key ]; then
    tls=/var/lib/postgresql/tls
    install -d -o postgres -g postgres -m 0700 "$tls"
    install -o postgres -g postgres -m 0644 /certs/server.crt "$tls/server.crt"
    install -o postgres -g postgres -m 0600 /certs/server.key "$tls/server.key"
    set -- "$@" -c ssl=on -c ssl_cert_file="$tls/server.crt" -c ssl_key_file="$tls/server.key" \
        -c ssl_min_protocol_version=TLSv1.2
    echo "tls-entrypoint: TLS on, with infra/certs/server.crt"
else
    echo "tls-entrypoint: no infra/certs/server.crt and server.key: TLS off"
fi
exec docker-entrypoint.sh "$@"
