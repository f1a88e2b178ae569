#!/bin/sh
# A small application: reads its configuration, then says what it sees
# (its settings, who it runs as, where) and what its build step left.
set -eu
. /etc/web-app/app.conf
echo "$APP_NAME: $greeting on port $APP_PORT"
echo "user $(id -u):$(id -g) in $(pwd)"
cat /var/lib/web-app/defaults
if [ $# -gt 0 ]; then
    echo "arguments: $*"
fi
