"""Blocks of whole CSV lines: a memory map of an uncompressed file, or pieces inflated from a
``.csv.gz`` on a thread of their own.

An uncompressed file is memory-mapped, so its blocks are views of the page cache and nothing is
read or copied before the scan. A ``.csv.gz`` is inflated by a background thread, a few megabytes at
a time, into a queue of at most :data:`QUEUE_PIECES` pieces (so memory stays bounded), while the
calling thread scans the pieces already inflated: inflate and scan overlap on two cores. The inflate
uses ISA-L (``isal``, a declared dependency, about 3x zlib) and falls back to the standard library's
zlib where isal cannot be imported.
"""

from __future__ import annotations

import mmap
import os
import queue
import stat
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from eventlm.errors import EventFormatError

#: Bytes inflated (or read) per piece from a compressed or unmappable file.
BLOCK_BYTES = 4 << 20
#: The largest block of text parsed at once when no line limit is given.
MAX_BLOCK_BYTES = 128 << 20
#: Inflated pieces waiting in the queue at most (memory: about this many times BLOCK_BYTES).
QUEUE_PIECES = 3

_NL, _CR = ord("\n"), ord("\r")
_EMPTY = np.zeros(0, dtype=np.uint8)


def _zlib_module():
    """The inflate implementation: ``isal.isal_zlib`` (ISA-L) where installed, else ``zlib``."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; platforms without its wheel
        return zlib
    return isal_zlib


def gzip_backend() -> str:
    """The name of the module that inflates ``.csv.gz`` files (``"isal.isal_zlib"`` or ``"zlib"``)."""
    return _zlib_module().__name__


def _bytes_kernels():
    from eventlm.io.csv import kernel

    return kernel.count_byte, kernel.line_end, kernel.last_line_end


def is_gzip(path) -> bool:
    return str(path).lower().endswith(".gz")


def iter_line_blocks(
    path: Path, max_lines: int | None = None, *, max_bytes: int | None = None, read_bytes: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_line_number_0based, bytes)`` blocks of whole lines: at most ``max_lines``
    lines (no limit for None), and about ``max_bytes`` bytes at most (default
    :data:`MAX_BLOCK_BYTES`; a block is cut at a line end).

    The bytes are a ``uint8`` array. An uncompressed file is memory-mapped and its blocks are views
    of the mapping (nothing is copied); a ``.gz`` file (or anything that cannot be mapped) is
    inflated (read) ``read_bytes`` (default :data:`BLOCK_BYTES`) at a time and the pieces of a
    block are joined. Raises :class:`EventFormatError` for an empty file and a truncated or corrupt
    gzip stream.
    """
    for line0, pieces in iter_piece_blocks(path, max_lines, max_bytes=max_bytes, read_bytes=read_bytes):
        parts = list(pieces)
        yield line0, parts[0] if len(parts) == 1 else np.concatenate(parts)


def iter_piece_blocks(
    path: Path, max_lines: int | None = None, *, max_bytes: int | None = None, read_bytes: int | None = None
) -> Iterator[tuple[int, Iterator[np.ndarray]]]:
    """:func:`iter_line_blocks`, with each block given as an iterator of its pieces (each of whole
    lines; the last piece of the file may lack its final newline). A piece is inflated while the
    one before is scanned. Each block's iterator must be used up before the next block is asked for
    (what is left of it is skipped then)."""
    if max_lines is not None and max_lines < 1:
        raise ValueError("max_lines must be positive")
    max_bytes = max_bytes or MAX_BLOCK_BYTES
    read_bytes = read_bytes or BLOCK_BYTES
    info = os.stat(path)
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        raise EventFormatError(path, "empty file (no events)")
    if not is_gzip(path):
        mapped = _map(path)
        if mapped is not None:
            for line0, block in _mapped_blocks(mapped, max_lines, max_bytes):
                yield line0, iter((block,))
            return
    stream = _LineStream(path, read_bytes)
    try:
        line0 = 0
        while True:
            first = stream.next_piece()
            if first is None:
                break
            pieces = _block_pieces(stream, first, max_lines, max_bytes)
            yield line0, pieces
            for _ in pieces:  # a consumer that stopped early: skip the rest of the block
                pass
            line0 = stream.lines
        if stream.lines == 0:
            raise EventFormatError(path, "empty file (no events)")
    finally:
        stream.close()


def _block_pieces(stream: _LineStream, piece, max_lines: int | None, max_bytes: int) -> Iterator[np.ndarray]:
    count_byte, line_end, _ = _bytes_kernels()
    n_lines = n_bytes = 0
    while piece is not None:
        found = int(count_byte(piece, _NL)) + int(piece[-1] != _NL)
        if max_lines is not None and n_lines + found >= max_lines:
            take = max_lines - n_lines
            stop = int(line_end(piece, 0, take))
            if stop < piece.size:
                stream.push_back(piece[stop:])
            stream.lines += take
            yield piece[:stop]
            return
        stream.lines += found
        yield piece
        n_lines += found
        n_bytes += piece.size
        if n_bytes >= max_bytes:
            return
        piece = stream.next_piece()


def _map(path: Path) -> np.ndarray | None:
    """The bytes of a regular file as a read-only memory map, or None where it cannot be mapped."""
    with open(path, "rb") as fh:
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a pipe, a special file: read it instead
            return None
    # the map stays open as long as an array views it (it keeps its own file descriptor)
    return np.frombuffer(mapped, dtype=np.uint8)


def _mapped_blocks(buf: np.ndarray, max_lines: int | None, max_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    count_byte, line_end, last_line_end = _bytes_kernels()
    line0, pos = 0, 0
    while pos < buf.size:
        stop = int(line_end(buf, pos, max_lines)) if max_lines else buf.size
        if stop - pos > max_bytes:  # cut at the last line end within max_bytes (or after one line)
            stop = int(last_line_end(buf, pos, pos + max_bytes))
            if stop <= pos:
                stop = int(line_end(buf, pos + max_bytes, 1))
        block = buf[pos:stop]
        yield line0, block
        line0 += int(count_byte(block, _NL)) + int(block[-1] != _NL)
        pos = stop


class _LineStream:
    """Pieces of whole lines from the chunks of a file (inflated on a thread for ``.gz``).

    A piece is a view of one chunk where possible; only the line that straddles two chunks is
    copied (as a piece of its own). ``lines`` counts the lines handed out so far (kept by
    :func:`_block_pieces`), for the line number of a corrupt stream.
    """

    def __init__(self, path: Path, read_bytes: int):
        self.path = path
        self.lines = 0
        self._carry = _EMPTY  # starts at a line start; holds no newline unless just pushed back
        self._pushback: np.ndarray | None = None
        self._chunks = _inflate_in_thread(path, read_bytes) if is_gzip(path) else _read_chunks(path, read_bytes)

    def push_back(self, piece: np.ndarray) -> None:
        self._pushback = piece

    def close(self) -> None:
        self._chunks.close()

    def _next_chunk(self) -> np.ndarray | None:
        try:
            chunk = next(self._chunks, None)
        except _GZIP_ERRORS as err:
            raise EventFormatError(
                self.path, f"truncated or corrupt gzip stream ({err})", line=self.lines + 1
            ) from None
        return None if chunk is None else np.frombuffer(chunk, dtype=np.uint8)

    def next_piece(self) -> np.ndarray | None:
        """The next piece of whole lines, or None at the end of the file."""
        if self._pushback is not None:
            piece, self._pushback = self._pushback, None
            return piece
        _, line_end, last_line_end = _bytes_kernels()
        carry = self._carry
        while True:
            if carry.size:
                k = int(last_line_end(carry, 0, carry.size))
                if k:
                    self._carry = carry[k:]
                    return carry[:k]
            chunk = self._next_chunk()
            if chunk is None:  # the end: a last line without its newline
                self._carry = _EMPTY
                return carry if carry.size else None
            if not carry.size:
                carry = chunk
                continue
            i = int(line_end(chunk, 0, 1))  # just past the chunk's first newline (or its end)
            carry = np.concatenate((carry, chunk[:i]))
            if carry[-1] == _NL:  # the straddling line, whole: a piece of its own
                self._carry = chunk[i:]
                return carry


def _read_chunks(path: Path, read_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while data := fh.read(read_bytes):
            yield data


_GZIP_ERRORS: tuple = (EOFError, OSError, zlib.error, ValueError)
try:
    from isal import isal_zlib as _isal_zlib

    _GZIP_ERRORS += (_isal_zlib.error,)
except ImportError:  # pragma: no cover
    pass


def _inflate(path: Path, read_bytes: int) -> Iterator[bytes]:
    """The inflated bytes of a gzip file (one or more members), at most ``read_bytes`` at a time."""
    module = _zlib_module()
    d = module.decompressobj(31)  # 31: a gzip header and trailer (CRC-32 and size are checked)
    pending = False  # input fed to the current member, whose end has not been seen
    with open(path, "rb") as fh:
        while comp := fh.read(max(read_bytes // 2, 1 << 16)):
            while comp:
                pending = True
                out = d.decompress(comp, read_bytes)
                if out:
                    yield out
                if d.eof:  # the end of a member: what follows is another member
                    comp, d, pending = d.unused_data, module.decompressobj(31), False
                else:
                    comp = d.unconsumed_tail
        if pending:
            out = d.flush()
            if out:
                yield out
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _inflate_in_thread(path: Path, read_bytes: int) -> Iterator[bytes]:
    """:func:`_inflate` running ahead on a thread of its own (the inflate releases the GIL), at most
    :data:`QUEUE_PIECES` pieces ahead of the caller."""
    pieces: queue.Queue = queue.Queue(maxsize=QUEUE_PIECES)
    stop = threading.Event()

    def work() -> None:
        try:
            for piece in _inflate(path, read_bytes):
                if stop.is_set():
                    return
                pieces.put(piece)
            pieces.put(None)
        except BaseException as err:  # handed to the caller, who raises it
            pieces.put(err)

    worker = threading.Thread(target=work, name="eventlm-gunzip", daemon=True)
    worker.start()
    try:
        while True:
            item = pieces.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # let a blocked put return, so that the thread sees the stop
            try:
                pieces.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()
