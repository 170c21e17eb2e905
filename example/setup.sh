#!/bin/sh
# Runs as the login user (privileged: false) with the arguments and environment the
# Taperfile gives it.
set -eu
echo "setting up for $APP_ENV with $# arguments: $*"
mkdir -p "$HOME/app"
printf '%s\n' "$@" > "$HOME/app/arguments"
