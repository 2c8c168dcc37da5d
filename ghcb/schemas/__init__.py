"""Declarative ``construct`` schemas: one per wire structure, named after Linux/GHCB.

These are the reference description of the bytes. They contain no lambdas (so they compile),
no ``Probe`` and no adapters; typed records and the fast ``struct`` codecs are derived from
them (``ghcb._fast``). Reserved gaps are named ``reserved_0x<offset>``.
"""

from __future__ import annotations
