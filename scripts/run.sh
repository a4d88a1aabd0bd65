#!/usr/bin/env bash
# The README's main command. Builds what is missing, then runs Scrollback on the embedded
# default. Today that is a single shard in one process (scrollback-demo): it creates a group
# conversation, sends messages, delivers the inbox fan-out and prints history and inboxes.
# Arguments are passed to scrollback-demo (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
exec build/cli/scrollback-demo "$@"
