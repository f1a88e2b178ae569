#!/bin/sh
# Greets whoever the configuration names, and says where it runs.
set -eu
. /etc/hello-app/hello.conf
echo "${GREETING}, ${NAME}! (pid $$, in $(pwd))"
for arg in "$@"; do
    echo "argument: ${arg}"
done
