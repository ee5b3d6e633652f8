#!/usr/bin/env bash
# A deployment directory with start.sh is run as `bash start.sh` instead of the runtime:
# predictor.py is not used, and this script owns the port.
#
# The platform gives the port in PORT (`openbayes-serving run DIR --port P` sets it too).
# In production nothing sets it, and the server must listen on port 80.
set -euo pipefail
cd "$(dirname "$0")"
# `exec` replaces this shell with the server, so SIGTERM from the platform reaches the
# server itself and no orphan is left behind.
exec python3 server.py --port "${PORT:-80}" --host "${HOST:-0.0.0.0}"
