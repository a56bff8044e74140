"""Helpers for tests and benchmarks: a real S3 server (SeaweedFS) on loopback.

See :mod:`marketlake.testing.seaweedfs`.
"""

from marketlake.testing.seaweedfs import SeaweedFS, SeaweedFSError, find_weed, free_ports

__all__ = ["SeaweedFS", "SeaweedFSError", "find_weed", "free_ports"]
