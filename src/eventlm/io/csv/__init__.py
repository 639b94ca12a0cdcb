"""The Dark Machines CSV format (``.csv``, ``.csv.gz``): fast reader and vectorized writer.

One event per line, energies in MeV (converted to GeV here and nowhere else)::

    event_id;process_id;event_weight;MET;METphi;obj1,E1,pt1,eta1,phi1;...;

The package, along the reader's pipeline:

- :mod:`~eventlm.io.csv.blocks`: blocks of whole lines: views of a memory-mapped file, or pieces of
  a ``.csv.gz`` inflated on a thread of their own (ISA-L where installed, else zlib);
- :mod:`~eventlm.io.csv.kernel`: the compiled scan (numba), which checks every line against the
  format and writes its values straight into the event arrays, converting numbers exactly where a
  fast path applies (almost always);
- :mod:`~eventlm.io.csv.scan`: the scan of a block on two threads, as a named :class:`ScanResult`;
- :mod:`~eventlm.io.csv.reader`: the result converted (the rest of the numbers by one Arrow cast),
  validated and built into events; bad lines described, reported or skipped;
- :mod:`~eventlm.io.csv.writer`: the writer (Arrow string kernels; float32 values with the fewest
  digits that read back exactly).

Only the kernel imports numba, and only when a CSV file is first read.
"""

from __future__ import annotations

from eventlm.io.csv.blocks import BLOCK_BYTES, MAX_BLOCK_BYTES, gzip_backend, iter_line_blocks
from eventlm.io.csv.reader import diagnose_line, iter_csv, parse_block
from eventlm.io.csv.scan import MEV_PER_GEV, ScanResult
from eventlm.io.csv.writer import CSVSink, float32_text, format_block


__all__ = [
    "BLOCK_BYTES", "MAX_BLOCK_BYTES", "MEV_PER_GEV", "CSVSink", "ScanResult", "diagnose_line", "float32_text",
    "format_block", "gzip_backend", "iter_csv", "iter_line_blocks", "parse_block",
]
