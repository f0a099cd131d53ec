#!/bin/sh
# The official rabbitmq image, as far as the stack uses it: the default user (an
# administrator), its password and vhost from RABBITMQ_DEFAULT_USER, _PASS and _VHOST;
# the plugins of /etc/rabbitmq/enabled_plugins; the log on standard output.
set -eu
: "${RABBITMQ_DEFAULT_USER:?set RABBITMQ_DEFAULT_USER}" "${RABBITMQ_DEFAULT_PASS:?set RABBITMQ_DEFAULT_PASS}"
cat > /etc/rabbitmq/rabbitmq.conf <<CONF
default_user = $RABBITMQ_DEFAULT_USER
default_pass = $RABBITMQ_DEFAULT_PASS
default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
CONF
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq RABBITMQ_LOGS=- RABBITMQ_SASL_LOGS=-
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
