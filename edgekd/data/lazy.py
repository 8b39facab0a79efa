"""A split's images read from disk when they are asked for, so that memory does not grow with the data set.

:class:`LazyImages` stands where a split's float32 N×C×H×W tensor stands (``Split.images``): ``len``,
``shape``, ``ndim``, ``dtype`` and indexing with an int, a slice or an index array / LongTensor give
exactly the tensor the in-memory path would hold, because each request runs the same
:func:`~edgekd.data.preprocess.preprocess` on the same raw pixels. What stays in memory is where the raw
pixels are (an ``.npz``'s images, cached once as an uint8 ``.npy`` and read row by row with
``pread``, see :class:`NpyRows`) or a list of image files, and the resolved preprocessing. Whole-array requests (:meth:`LazyImages.numpy`, :func:`chunks`)
go chunk by chunk; ``numpy()`` still builds the whole float32 array, so only small splits use it.

When: the train split streams when its preprocessed float32 tensor would exceed
:data:`STREAM_MIN_BYTES`, or always with ``EDGEKD_STREAM=1`` (never with ``EDGEKD_STREAM=0``);
val and test stay in memory. The ``.npz`` cache lives in ``$EDGEKD_CACHE/data/<sha256 of the .npz>/``.
"""
from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
import torch

from .._io import cache_root
from ..config import Preprocessing
from ..errors import DataError
from .preprocess import preprocess

# A train split streams above this many bytes of preprocessed float32 images. 1 GiB is above the largest
# train split the tests, benchmarks and demo use (PneumoniaMNIST's: 12 MB at 28×28, 780 MB at 224×224) and
# well under a laptop's memory, so those runs keep the in-memory path (no preprocessing per batch), while
# the 50 000-image 224×224 train split of issue 11 (10 GB, 30 GB in RGB) is read from disk.
STREAM_MIN_BYTES = 1 << 30
STREAM_ENV = "EDGEKD_STREAM"
# float32 values per chunk of a whole-array pass (8 MB): preprocessing makes ~4 temporaries of a chunk's
# size, so a pass over a lazy split costs some 40 MB beside the model, whatever the data set's size
_CHUNK_VALUES = 1 << 21


def stream_train(n: int, channels: int, out_hw: tuple[int, int]) -> bool:
    """Whether a train split of ``n`` images (``channels``×``out_hw`` after preprocessing) is read lazily."""
    env = os.environ.get(STREAM_ENV, "").strip()
    if env not in ("", "0", "1"):
        raise DataError(f"{STREAM_ENV}={env[:20]!r}: use 1 (read the train images from disk), 0 (hold them in "
                        "memory) or leave it unset (from disk above 1 GiB of preprocessed images)")
    if env:
        return env == "1"
    return n * channels * out_hw[0] * out_hw[1] * 4 > STREAM_MIN_BYTES


class LazyRows(ABC):
    """N preprocessed float32 images computed on access; a subclass says how rows are read (:meth:`_take`)."""

    dtype = torch.float32
    ndim = 4

    def __init__(self, shape: tuple[int, int, int, int]):
        self.shape = torch.Size(shape)

    @abstractmethod
    def _take(self, rows: np.ndarray) -> torch.Tensor:
        """The float32 len(rows)×C×H×W images at ``rows`` (int64, each in [0, N), any order, repeats allowed)."""

    def __len__(self) -> int:
        return int(self.shape[0])

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def __getitem__(self, key) -> torch.Tensor:
        n = len(self)
        if isinstance(key, torch.Tensor) and key.ndim == 0 and key.dtype != torch.bool:
            key = int(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for {n} images")
            return self._take(np.array([i % n], dtype=np.int64))[0]
        if isinstance(key, slice):
            return self._take(np.arange(*key.indices(n), dtype=np.int64))
        rows = key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        if rows.dtype == np.bool_:
            if rows.shape != (n,):
                raise IndexError(f"a mask of shape {rows.shape} does not index {n} images")
            rows = np.flatnonzero(rows)
        elif rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
            raise IndexError(f"images are indexed by an int, a slice or a 1-D index array, got {type(key).__name__} "
                             f"{getattr(rows, 'dtype', '')} {tuple(getattr(rows, 'shape', ()))}")
        rows = rows.astype(np.int64)
        if rows.size and not (-n <= rows.min() and rows.max() < n):
            raise IndexError(f"an index is out of bounds for {n} images")
        return self._take(np.where(rows < 0, rows + n, rows))

    def chunks(self, rows: int | None = None) -> Iterator[torch.Tensor]:
        """The images in order, ``rows`` at a time (default: about 8 MB of float32 each)."""
        yield from chunks(self, rows)

    def numpy(self) -> np.ndarray:
        """Every image as one float32 array (built chunk by chunk: for val/test-sized splits only)."""
        out = np.empty(tuple(self.shape), dtype=np.float32)
        start = 0
        for x in self.chunks():
            out[start : start + len(x)] = x.numpy()
            start += len(x)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)}, dtype=float32)"


def chunks(images, rows: int | None = None) -> Iterator[torch.Tensor]:
    """``images`` (a tensor or :class:`LazyRows`) in order, ``rows`` at a time (default: ~8 MB of float32)."""
    n = len(images)
    per = max(1, int(np.prod(tuple(images.shape[1:]))))
    step = rows or max(1, _CHUNK_VALUES // per)
    for start in range(0, n, step):
        yield images[start : start + step]


class LazyImages(LazyRows):
    """Raw uint8 pixels (N×H×W or N×H×W×C: an array, or :class:`NpyRows` of the data cache) preprocessed per request.

    ``rows``: which raw images the split holds, in order (``--max-samples``); None: all of them.
    """

    def __init__(self, raw: np.ndarray, pre: Preprocessing, out_hw: tuple[int, int], rows: np.ndarray | None = None):
        self.raw, self.pre = raw, pre
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = len(raw) if self.rows is None else len(self.rows)
        channels = 1 if raw.ndim == 3 else int(raw.shape[3])
        super().__init__((n, channels, *out_hw))

    def _take(self, rows: np.ndarray) -> torch.Tensor:
        if rows.size == 0:
            return torch.empty((0, *self.shape[1:]), dtype=torch.float32)
        src = rows if self.rows is None else self.rows[rows]
        if src.size > 1 and bool((np.diff(src) == 1).all()):
            pixels = self.raw[src[0] : src[-1] + 1]  # a contiguous run: a view of the map, no gather
        else:
            pixels = self.raw[src]
        return preprocess(pixels, self.pre)


class LazyFiles(LazyRows):
    """Images decoded from files per request: ``read(i)`` gives image ``i``'s 0-255 pixels (H×W or H×W×3).

    Consecutive images of one size are preprocessed together, as the in-memory folder reader does.
    """

    def __init__(self, n: int, channels: int, out_hw: tuple[int, int], read: Callable[[int], np.ndarray],
                 pre: Preprocessing):
        self.read, self.pre = read, pre
        super().__init__((n, channels, *out_hw))

    def _take(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.float32)
        batch: list[np.ndarray] = []
        start = 0
        for i in rows.tolist():
            pixels = self.read(i)
            if batch and pixels.shape != batch[0].shape:
                out[start : start + len(batch)] = preprocess(np.stack(batch), self.pre)
                start, batch = start + len(batch), []
            batch.append(pixels)
        if batch:
            out[start : start + len(batch)] = preprocess(np.stack(batch), self.pre)
        return out


class ChainedImages(LazyRows):
    """Two image sets one after the other (the train split, then unlabelled images), either of them lazy."""

    def __init__(self, first, second):
        if tuple(first.shape[1:]) != tuple(second.shape[1:]):
            raise DataError(f"images of shape {tuple(first.shape[1:])} and {tuple(second.shape[1:])} cannot be "
                            "pooled: give unlabelled images the train images' size and channels")
        self.parts = (first, second)
        super().__init__((len(first) + len(second), *first.shape[1:]))

    def _take(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.float32)
        offset = 0
        for part in self.parts:
            inside = (rows >= offset) & (rows < offset + len(part))
            if inside.any():
                local = rows[inside] - offset
                got = part[local] if isinstance(part, LazyRows) else part[torch.from_numpy(local)]
                out[torch.from_numpy(np.flatnonzero(inside))] = got.to(torch.float32)
            offset += len(part)
        return out


def concat(first, second):
    """``torch.cat`` of two image sets, or a :class:`ChainedImages` when either is lazy."""
    if isinstance(first, LazyRows) or isinstance(second, LazyRows):
        return ChainedImages(first, second)
    return torch.cat([first, second.to(first.dtype)])


class NpyRows:
    """Rows of a C-ordered ``.npy`` file (the data cache's uint8 images) read with ``os.pread`` on request.

    Not a memory map on purpose: every page a map has touched counts in the process's resident memory,
    so one pass of training over a memory-mapped 2.5 GB cache would show 2.5 GB of RSS; bytes read with
    ``pread`` stay in the kernel's page cache, which the kernel shares and reclaims. Indexed like the
    array (a slice of step 1, or a 1-D array of row numbers), it gives numpy arrays.
    """

    def __init__(self, path: Path):
        header = np.load(path, mmap_mode="r", allow_pickle=False)  # shape, dtype and where the data starts
        if not header.flags.c_contiguous:
            raise DataError(f"the data cache {path} is not C-ordered: delete its folder and run again")
        self.path, self.shape, self.dtype, self.offset = Path(path), tuple(header.shape), header.dtype, header.offset
        self.ndim = len(self.shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del header
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, count: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        want, pos, parts = count * self.row_bytes, self.offset + start * self.row_bytes, []
        while want > 0:
            got = os.pread(self._fd, want, pos)
            if not got:
                raise DataError(f"the data cache {self.path} is shorter than its header says: delete its folder "
                                "and run again")
            parts.append(got)
            want, pos = want - len(got), pos + len(got)
        return b"".join(parts)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            n = max(0, stop - start)
            return np.frombuffer(self._read(start, n), dtype=self.dtype).reshape(n, *self.shape[1:])
        rows = np.asarray(key, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        i = 0
        while i < len(rows):  # consecutive rows in one read
            j = i + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1:
                j += 1
            out[i:j] = self[int(rows[i]) : int(rows[i]) + (j - i)]
            i = j
        return out

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass


def data_cache(digest: str) -> Path:
    """The folder the raw pixels of the data file with this sha256 are cached in."""
    return cache_root() / "data" / digest


def cached_npy(digest: str, name: str, shape: tuple[int, ...], dtype: np.dtype,
               write: Callable[[BinaryIO], None]) -> np.ndarray:
    """``data_cache(digest)/name.npy`` memory-mapped read-only; written first by ``write(file)`` when missing.

    The file is written under a temporary name and renamed into place, so a concurrent run sees either
    no file or a whole one; a file of another shape or dtype (damaged) is written again.
    """
    folder = data_cache(digest)
    path = folder / f"{name}.npy"
    found = _open_npy(path)
    if found is not None and found.shape == shape and found.dtype == dtype:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DataError(f"cannot write the data cache {folder} ({exc.strerror or exc}): set EDGEKD_CACHE to a "
                        f"writable folder with room for {name}, or {STREAM_ENV}=0 to hold the images in memory") from None
    out = _open_npy(path)
    if out is None or out.shape != shape or out.dtype != dtype:
        raise DataError(f"the data cache {path} does not hold the {shape} {dtype} array just written: delete "
                        f"{folder} and run again")
    return out


def _open_npy(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
