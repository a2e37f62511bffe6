#!/usr/bin/env python3
"""Integrity with ARCTIC_IO_MODE=auto (the default): 32 concurrent connections, each sends
8 MiB to the upstream and receives a different 8 MiB back at the same time; both directions
verified byte-for-byte and by sha256, FIN at the end of both directions. Twice: with the
default trial pipes (every direction starts on a pipe and keeps it once it streams), and
with ARCTIC_PIPE_TRIAL=0 (every direction starts on buffers and switches to a pipe
mid-stream)."""
import harness as h
from integrity_common import run_integrity


def main():
    run_integrity("auto")
    run_integrity("auto", {"ARCTIC_PIPE_TRIAL": 0})


h.run(main, timeout=200)
