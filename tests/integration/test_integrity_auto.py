#!/usr/bin/env python3
"""Integrity with ARCTIC_IO_MODE=auto (the default): 32 concurrent connections, each sends
8 MiB to the upstream and receives a different 8 MiB back at the same time; every direction
starts on buffers and switches to a pipe mid-stream; both directions verified byte-for-byte
and by sha256, FIN at the end of both directions."""
import harness as h
from integrity_common import run_integrity

h.run(lambda: run_integrity("auto"), timeout=110)
