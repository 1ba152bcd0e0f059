"""Files in and out of Orthanc: ``download``, ``to_zip``, ``upload``, ``delete``.

* Downloads are byte-identical copies of the stored files (``GET /instances/{id}/file`` with
  ``Accept-Encoding: identity``), written to a temporary name in the target folder and renamed
  into place, so an interrupted run never leaves a truncated file under a final name. A rerun
  skips files that are already complete.
* Uploads report every input path (ZIP members included) with a status; nothing aborts a batch.
* Deletes are dry runs unless ``confirm=True``; the dry run lists what would go, including
  instances outside the frame that go with a whole study or patient.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from orthanc_pandas._frame.schema import ROUTES
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas._util.fanout import fan_out, map_in_order, stopped_answering, worker_count
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import (
    BulkError,
    DownloadFolderError,
    OrthancConnectionError,
    OrthancHTTPError,
    OrthancPandasError,
)

UPLOAD_STATUSES = ("Success", "AlreadyStored", "NotDicom", "Failure", "Error")


_LEVELS = ("instance", "series", "study", "patient")


_CHUNK = 1 << 20


def _writable_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadFolderError(
            f"Cannot create the download folder {folder} ({exc.strerror}). Pass a folder you can "
            "write to: df.orthanc.download('/path/to/folder')."
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadFolderError(
            f"The download folder {folder} is not writable. Pass a folder you can write to: "
            "df.orthanc.download('/path/to/folder')."
        )
    return folder


def _target(folder: Path, ids: tuple[str, str, str, str], layout: str) -> Path:
    patient, study, series, instance = ids
    if layout == "flat":
        return folder / f"{instance}.dcm"
    return folder / patient / study / series / f"{instance}.dcm"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _complete(client: OrthancClient, path: Path, instance: str, size, verify: str) -> bool:
    """Whether ``path`` already holds the stored file (so a rerun can skip it)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if verify == "none":
        return True
    if size is None or pd.isna(size):
        size = client.get_json(f"/instances/{instance}").get("FileSize")
    if size is None or st.st_size != int(size):
        return False
    if verify == "md5":
        try:
            stored = client.get_bytes(f"/instances/{instance}/attachments/dicom/md5").decode().strip()
        except OrthancHTTPError:
            return False  # the server keeps no MD5 (StoreMD5ForAttachments off): download again
        return stored == _md5(path)
    return True


def _fetch_to(client: OrthancClient, instance: str, path: Path) -> None:
    """Stream one file to a temporary name next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.part"):  # left by an interrupted run
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out, client.get_file(instance) as answer:
            for chunk in answer:
                out.write(chunk)
        os.replace(tmp, path)
    except OrthancConnectionError as exc:  # retried by the client already, where that was safe
        Path(tmp).unlink(missing_ok=True)
        raise type(exc)(
            f"Downloading instance {instance} failed ({exc}); rerun download() to resume: "
            "complete files are skipped.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download(df: pd.DataFrame, client: OrthancClient, folder: str | os.PathLike,
             *, layout: str = "flat", verify: str = "size", progress=None,
             max_workers: int | None = None, errors: str = "raise") -> pd.Series:
    """Save the stored DICOM file of every row; return the paths in row order.

    Parameters
    ----------
    df : pandas.DataFrame
        An Orthanc index frame (or a selection of one).
    client : OrthancClient
    folder : path
        Where to write (created when missing). Required: the library never picks a place
        that nobody would clean up.
    layout : {"flat", "tree"}, default "flat"
        ``flat``: ``folder/<instance id>.dcm``. ``tree``:
        ``folder/<patient id>/<study id>/<series id>/<instance id>.dcm`` (Orthanc ids: safe
        file names, unique, and the same on every server for the same UIDs).
    verify : {"size", "md5", "none"}, default "size"
        How a file already on disk is judged complete before it is skipped: its size equals
        the stored size (the ``orthanc_file_size`` column); ``md5`` also compares the MD5 that
        Orthanc keeps for the attachment (one small request and one local read per file);
        ``none`` skips any existing file.
    progress : bool or tqdm, optional
        Progress bar; by default shown in terminals and notebooks from 50 files.
    max_workers : int, optional
        Concurrent downloads (default 4, never more than ``client.pool_size``).
    errors : {"raise", "report"}, default "raise"
        What a file the server refuses (deleted meanwhile, ...) does: raise its error, or
        leave ``None`` as its path and name it in ``result.attrs["errors"]`` (instance id ->
        message). A server that stops answering always raises.

    Returns
    -------
    pandas.Series
        String paths, with ``df``'s index (same order, same length), named ``path``.

    Examples
    --------
    >>> paths = df[df.Modality == "CT"].orthanc.download("ct_files")       # doctest: +SKIP
    >>> paths = df.orthanc.download("by_series", layout="tree")             # doctest: +SKIP
    >>> pydicom.dcmread(paths.iloc[0])                                      # doctest: +SKIP
    """
    if layout not in ("flat", "tree"):
        raise ValueError(f"layout must be 'flat' or 'tree', got {layout!r}.")
    if verify not in ("size", "md5", "none"):
        raise ValueError(f"verify must be 'size', 'md5' or 'none', got {verify!r}.")
    check_bulk_args(max_workers, errors)
    if folder is None:
        raise TypeError("download() needs a folder to write to, e.g. df.orthanc.download('files').")
    root = _writable_folder(Path(folder))
    idx = list(df.index)
    targets = [_target(root, tuple(map(str, ids)), layout) for ids in idx]
    sizes = (df["orthanc_file_size"].tolist() if "orthanc_file_size" in df.columns
             else [None] * len(df))
    jobs: dict[Path, tuple[str, object]] = {}
    for ids, path, size in zip(idx, targets, sizes, strict=False):
        jobs.setdefault(path, (str(ids[3]), size))
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(jobs) or 1)
    done = 0
    failed: dict[str, str] = {}
    count_lock = threading.Lock()
    with progress_bar(progress, total=len(jobs), desc="Downloading", unit="file",
                      min_total=50) as bar:
        def one(item):
            nonlocal done
            path, (instance, size) = item
            try:
                if not _complete(client, path, instance, size, verify):
                    _fetch_to(client, instance, path)
            except OrthancHTTPError as exc:  # the server answered, about this file only
                if errors == "raise":
                    raise
                with count_lock:
                    failed[instance] = str(exc)
            with count_lock:
                done += 1
            bar.update(1)

        try:
            map_in_order(one, jobs.items(), workers, name="orthanc-download")
        except OrthancConnectionError as exc:
            # a dead server fails every remaining file: stop now and say what is on disk
            raise stopped_answering(
                exc, "download", done, len(jobs), f"files were saved complete in {root}",
                "no other file was written under its final name (no partial files). Rerun "
                "download() to fetch the rest: complete files are skipped.") from None
    out = pd.Series([None if str(ids[3]) in failed else str(p) for ids, p in zip(idx, targets, strict=True)],
                    index=df.index, name="path", dtype=object)
    if errors == "report":
        out.attrs["errors"] = failed
    return out


def to_zip(df: pd.DataFrame, client: OrthancClient, path: str | os.PathLike) -> Path:
    """Write Orthanc's ZIP archive of the series of the rows to ``path``.

    The archive holds whole series (Orthanc's ``/tools/create-archive`` works on resources):
    a frame holding part of a series gets the whole series. It is streamed to a temporary file
    next to ``path`` and renamed into place when complete.

    Examples
    --------
    >>> df[df.Modality == "MR"].orthanc.to_zip("mr.zip")                   # doctest: +SKIP
    PosixPath('mr.zip')
    """
    path = Path(path)
    _writable_folder(path.parent if str(path.parent) else Path("."))
    series = list(dict.fromkeys(map(str, df.index.get_level_values("series"))))
    if not series:
        raise OrthancPandasError("to_zip() got a frame with no rows: there is nothing to archive.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out, \
                client.stream("POST", "/tools/create-archive", idempotent=True,
                              json_body={"Resources": series, "Synchronous": True}) as answer:
            try:
                for chunk in answer:
                    out.write(chunk)
            except OrthancConnectionError as exc:
                raise type(exc)(
                    f"The connection broke while writing the archive ({exc}); nothing was "
                    f"written to {path}. Try again.") from None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- upload ---------------------------------------------------------------------------------
def _expand_inputs(paths, recursive: bool) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in found if f.is_file()))
        else:
            out.append(p)  # a missing file is reported as Error, not skipped
    return out


def _looks_like_dicom(data: bytes) -> bool:
    """A cheap local sniff: the Part 10 ``DICM`` marker, or a raw dataset starting with a
    group 0002/0008 element (Orthanc also stores files without preamble)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if len(data) < 16:
        return False
    group_le = int.from_bytes(data[0:2], "little")
    group_be = int.from_bytes(data[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be == 0x0008


#: The sniff looks at this many bytes of each file (the preamble, ``DICM`` and a little more)
_SNIFF = 132


#: A ZIP member is refused, not sent, when it inflates beyond this (upload's ``max_member_size``):
#: 4 GiB is the most one uncompressed DICOM element can hold, and Orthanc holds a whole request
#: body in its memory
MAX_MEMBER_SIZE = 4 << 30


#: ... or when it inflates more than this many times its compressed size (``max_ratio``)...
MAX_RATIO = 200


#: ... once it inflates beyond this: small members (a flat-colour secondary capture deflates
#: ~200:1, pydicom's test files up to 203:1, a 512 x 512 phantom 107:1) are never refused for
#: their ratio, however well they compress
RATIO_FLOOR = 64 << 20


class _Unreadable(Exception):
    """Reading an input failed while its bytes were being sent: the input's fault, never the
    server's (an ``OSError`` there would read as a broken connection and stop the batch)."""


class _Body:
    """One file or ZIP member as a request body: read in 1 MiB pieces as it is sent, never whole.

    ``len()`` gives requests the Content-Length (Orthanc wants one); ``seek(0)`` opens the input
    again for a retry (:meth:`OrthancClient.stream` rewinds a body it sends again). Reading stops
    at the announced size: an input that turns out shorter raises, never sends a short body.
    It is an iterable of 1 MiB pieces and not a file object on purpose: urllib3 reads a file
    object in 16 kB blocks, one ``send`` each, which cost 1.4 s of client CPU and ~20% of the
    wall time on 2,000 files of 128 kB; an iterable is sent one piece per ``send``.
    """

    def __init__(self, open_input, size: int, name: str, lock=None):
        self._open, self._size, self.name = open_input, int(size), name
        # zipfile counts a ZipFile's open members without a lock: opening and closing members
        # of one archive from several threads goes through the archive's lock
        self._lock = lock or contextlib.nullcontext()
        self._f = None
        self._pos = 0
        self._first: bytes | None = None

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return 0  # iterating always sends the body from its first byte (the first piece kept)

    def seek(self, pos: int, whence: int = 0) -> int:
        if (pos, whence) != (0, 0):
            raise ValueError("an upload body only rewinds to its start")
        self.close()
        self._pos, self._first = 0, None
        return 0

    def _read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        try:
            if self._f is None:
                with self._lock:
                    self._f = self._open()
            data = self._f.read(n)
        except Exception as exc:  # OSError, BadZipFile (bad CRC), zlib.error...
            raise _Unreadable(f"reading {self.name} failed after {self._pos} bytes "
                              f"({type(exc).__name__}: {exc})") from None
        if not data:
            raise _Unreadable(f"{self.name} ended after {self._pos} of the {self._size} bytes it "
                              "had when the upload started")
        self._pos += len(data)
        return data

    def first(self) -> bytes:
        """The first 1 MiB (all of a smaller input), read once: sniffed, then sent first."""
        if self._first is None:
            self._first = self._read(_CHUNK)
        return self._first

    def __iter__(self):
        if self._first is not None:
            yield self._first
        while chunk := self._read(_CHUNK):
            yield chunk

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            with self._lock:
                f.close()


class _Archive:
    """An open ZIP whose members are being sent: closed once the last member is done."""

    def __init__(self, path: Path):
        self.zf = zipfile.ZipFile(path)
        self.lock = threading.Lock()  # around opening and closing members (see _Body)
        self._users = 1  # the reader, until it has handed out every member

    def hold(self) -> None:
        with self.lock:
            self._users += 1

    def release(self) -> None:
        with self.lock:
            self._users -= 1
            if self._users == 0:
                self.zf.close()


class _Input:
    """What the reader hands a worker: a plain file, or a member of an open ZIP."""

    def __init__(self, name: str, path: Path | None = None, archive: _Archive | None = None,
                 info: zipfile.ZipInfo | None = None):
        self.name, self.path, self.archive, self.info = name, path, archive, info

    def body(self) -> _Body:
        if self.archive is not None:
            return _Body(lambda: self.archive.zf.open(self.info), self.info.file_size, self.name,
                         lock=self.archive.lock)
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise _Unreadable(f"{exc.strerror or exc}: {self.path}") from None
        return _Body(lambda: open(self.path, "rb"), size, self.name)

    def done(self) -> None:
        if self.archive is not None:
            self.archive.release()


def _bomb(info: zipfile.ZipInfo, max_size: int | None, max_ratio: float | None) -> str | None:
    """Why a ZIP member looks like a ZIP bomb (from its central directory entry), or None.

    Only the sizes the archive announces are read: zipfile never inflates a member beyond its
    announced size (a member that lies about it fails its CRC check and is reported).

    Examples
    --------
    >>> info = zipfile.ZipInfo("bomb.dcm"); info.file_size, info.compress_size = 1 << 30, 1 << 20
    >>> print(_bomb(info, MAX_MEMBER_SIZE, MAX_RATIO))
    inflates 1024 times (1,073,741,824 bytes from 1,048,576): over max_ratio=200, a ZIP bomb? Not sent; pass max_ratio=None to send it anyway.
    >>> _bomb(info, MAX_MEMBER_SIZE, None) is None
    True
    """
    size, packed = info.file_size, max(info.compress_size, 1)
    if max_size is not None and size > max_size:
        return (f"inflates to {size:,} bytes, over max_member_size={max_size:,}: a ZIP bomb? Not "
                "sent; pass a larger max_member_size to send it anyway.")
    if max_ratio is not None and size > RATIO_FLOOR and size > max_ratio * packed:
        return (f"inflates {size / packed:.0f} times ({size:,} bytes from {packed:,}): over "
                f"max_ratio={max_ratio:g}, a ZIP bomb? Not sent; pass max_ratio=None to send it "
                "anyway.")
    return None


def _is_zip(f: Path) -> bool:
    if f.suffix.lower() == ".dcm":
        return False
    with open(f, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _items(files: list[Path], archives: list[_Archive], *, max_size: int | None,
           max_ratio: float | None) -> Iterator[tuple[str, object]]:
    """(report path, an :class:`_Input` or the exception that refuses it) for every file and
    every ZIP member, in order. Nothing here reads more than a file's first 4 bytes and a ZIP's
    central directory; the bytes are read by the worker that sends them."""
    for f in files:
        try:
            is_zip = _is_zip(f)
        except OSError as exc:
            yield str(f), exc
            continue
        if not is_zip:
            yield str(f), _Input(str(f), path=f)
            continue
        try:
            archive = _Archive(f)
        except (zipfile.BadZipFile, OSError) as exc:
            yield str(f), exc
            continue
        archives.append(archive)
        try:
            members = [m for m in archive.zf.infolist() if not m.is_dir()]
            if not members:
                yield str(f), ValueError("empty ZIP archive")
            for m in members:
                name = f"{f}!{m.filename}"
                why = _bomb(m, max_size, max_ratio)
                if why is not None:
                    yield name, _Unreadable(why)
                    continue
                archive.hold()
                yield name, _Input(name, archive=archive, info=m)
        finally:
            archive.release()


def _upload_row(status: str, message: str = "", answer: dict | None = None) -> dict:
    answer = answer or {}
    return {"status": status, "message": message, "instance": answer.get("ID"),
            "series": answer.get("ParentSeries"), "study": answer.get("ParentStudy"),
            "patient": answer.get("ParentPatient")}


def classify_upload(answer=None, error: BaseException | None = None, *,
                    looked_like_dicom: bool = True) -> dict:
    """The report of one uploaded file, from Orthanc's answer or the error the upload raised.

    Pure: no server. ``answer`` is the JSON of ``POST /instances`` (a dict, or a list of
    them for a ZIP body); ``error`` is what sending raised instead.

    Parameters
    ----------
    answer : dict or list of dict, optional
    error : Exception, optional
    looked_like_dicom : bool, default True
        Whether the bytes sent passed the local DICOM sniff (or were checked before sending): a
        "Bad file format" refusal of bytes that did not is ``NotDicom``, else ``Failure``.

    Returns
    -------
    dict
        ``status`` (one of :data:`UPLOAD_STATUSES`), ``message``, and the Orthanc ids
        ``instance``, ``series``, ``study``, ``patient`` (``None`` unless stored).

    Examples
    --------
    >>> classify_upload({"Status": "AlreadyStored", "ID": "i", "ParentSeries": "s"})["status"]
    'AlreadyStored'
    >>> classify_upload(error=OSError("no such file"))["status"]
    'Error'
    """
    if error is None:
        if isinstance(answer, list):  # Orthanc answers a list for ZIP bodies
            answer = answer[0] if len(answer) == 1 else {"Status": "Failure",
                                                         "Message": f"{len(answer)} answers"}
        if not isinstance(answer, dict):
            return _upload_row("Error", f"unexpected answer from Orthanc: {answer!r:.200}")
        status = str(answer.get("Status", "Failure"))
        return _upload_row(status if status in UPLOAD_STATUSES else "Failure",
                           answer.get("Message", ""), answer)
    if isinstance(error, OrthancHTTPError):
        if error.status == 400 and "Bad file format" in (error.orthanc_message or "") \
                and not looked_like_dicom:
            status = "NotDicom"
        else:
            status = "Failure" if error.status < 500 else "Error"  # < 500: a file Orthanc refused
        return _upload_row(status, error.orthanc_message or str(error))
    if isinstance(error, OrthancPandasError):
        return _upload_row("Error", str(error))
    return _upload_row("Error", f"{type(error).__name__}: {error}")


def upload(paths, client: str | OrthancClient, *, recursive: bool = False,
           check_dicom: bool = True, progress=None, max_workers: int | None = None,
           errors: str = "raise", max_member_size: int | None = MAX_MEMBER_SIZE,
           max_ratio: float | None = MAX_RATIO) -> pd.DataFrame:
    """Store DICOM files in Orthanc; report every input path.

    Parameters
    ----------
    paths : path or list of paths
        Files, folders (their files; subfolders too with ``recursive=True``) and ZIP archives.
        Each member of a ZIP is uploaded and reported on its own as ``"archive.zip!member"``.
    client : OrthancClient or str
        The server, as a client or a URL.
    recursive : bool, default False
        Descend into subfolders.
    check_dicom : bool, default True
        Sniff locally that a file is DICOM before sending it (the ``DICM`` marker, or a
        dataset without preamble that starts with a group 0002/0008 element). Other files are
        then reported ``NotDicom`` without being sent. ``False`` sends everything and lets Orthanc
        judge.
    progress : bool or tqdm, optional
        Progress bar; shown in terminals and notebooks from 50 files by default.
    max_workers : int, optional
        Concurrent uploads (default 4).
    errors : {"raise", "report"}, default "raise"
        ``"raise"``: after every file was tried, a :class:`~orthanc_pandas.errors.BulkError`
        when any is ``Failure`` or ``Error`` (its ``.report`` is the report below);
        ``"report"``: return the report regardless. ``NotDicom`` is not a failure.
    max_member_size : int or None, default 4 GiB
        A ZIP member that inflates beyond this many bytes is not sent: its row is ``Error``
        with the reason (a ZIP bomb?), and the rest of the batch goes on. ``None``: no limit.
    max_ratio : float or None, default 200
        Likewise for a member inflating more than this many times its compressed size, once it
        inflates beyond 64 MiB (:data:`RATIO_FLOOR`; smaller members are never refused for
        their ratio). ``None``: no limit.

    Notes
    -----
    Files and ZIP members are streamed to the server in 1 MiB pieces, one ``POST /instances``
    per file on kept-alive connections: memory stays a few MiB per worker whatever the size of
    the files or archives (``docs/files.md`` has the measurements, and why not ZIP bodies).

    Returns
    -------
    pandas.DataFrame
        One row per input file or ZIP member, in input order, with columns ``path``,
        ``status`` (``Success``, ``AlreadyStored``, ``NotDicom``: not a DICOM file;
        ``Failure``: a DICOM file Orthanc refused (truncated, corrupt, missing required tags);
        ``Error``: unreadable file, bad ZIP, or the server failed; once the server stops
        answering, the files after it are reported ``Error`` "not sent" without being sent),
        ``message``, ``instance``,
        ``series``, ``study``, ``patient`` (Orthanc ids, missing unless stored).

    Examples
    --------
    >>> report = orthanc_pandas.upload("incoming/", "http://127.0.0.1:8042", recursive=True)  # doctest: +SKIP
    >>> report.status.value_counts()                                                          # doctest: +SKIP
    >>> report[report.status.isin(["Failure", "Error"])]                                      # doctest: +SKIP
    """
    check_bulk_args(max_workers, errors)
    client = get_client(client)
    files = _expand_inputs(paths, recursive)
    rows: list[dict] = []
    lock = threading.Lock()
    server_down: list[str] = []  # set once the server stopped answering: send nothing more

    def post(item: _Input) -> dict:
        body = item.body()
        try:
            first = body.first()
            looks = _looks_like_dicom(first[:_SNIFF])
            if check_dicom and not looks:
                return _upload_row("NotDicom", "not a DICOM file (no DICM marker, no SOP Instance UID)")
            # a file that fits in the first piece goes as bytes; a larger one as the pieces
            answer = client.post_json("/instances", data=first if len(first) == len(body) else body,
                                      idempotent=True, headers={"Content-Type": "application/dicom"})
        except _Unreadable:  # the input's fault: its row says so, the batch goes on
            raise
        except Exception as exc:  # never abort the batch: report it on its row
            if isinstance(exc, OrthancConnectionError):
                # retried already (uploads are idempotent): the server is gone, so the rest
                # of the batch is reported unsent at once instead of failing file by file
                server_down.append(type(exc).__name__)
            return classify_upload(error=exc, looked_like_dicom=check_dicom or looks)
        finally:
            body.close()
        return classify_upload(answer)

    def send(i: int, name: str, item) -> None:
        try:
            if server_down:
                row = _upload_row("Error", f"not sent: the server stopped answering earlier in "
                                           f"this batch ({server_down[0]}). Rerun upload(): files "
                                           "already stored are reported AlreadyStored.")
            elif isinstance(item, _Unreadable):
                row = _upload_row("Error", str(item))
            elif isinstance(item, BaseException):
                row = classify_upload(error=item)
            else:
                try:
                    row = post(item)
                except _Unreadable as exc:
                    row = _upload_row("Error", str(exc))
        finally:
            if isinstance(item, _Input):
                item.done()
        with lock:
            rows.append((i, {"path": name, **row}))

    workers = worker_count(max_workers, pool_size=client.pool_size)
    archives: list[_Archive] = []
    try:
        with progress_bar(progress, total=len(files), desc="Uploading", unit="file",
                          min_total=50) as bar:
            def read():  # the bar counts files (a ZIP is one), as they are read
                last = None
                for i, (name, item) in enumerate(_items(files, archives, max_size=max_member_size,
                                                        max_ratio=max_ratio)):
                    if last != name.split("!", 1)[0]:
                        if last is not None:
                            bar.update(1)
                        last = name.split("!", 1)[0]
                    yield i, name, item
                if last is not None:
                    bar.update(1)

            # Inputs are opened lazily and at most 4x the workers are handed out ahead
            # (window), each a path or a ZIP entry: no file's bytes are held, only the 1 MiB
            # pieces on their way to the server.
            fan_out(lambda job: send(*job), read(), workers, window=4 * workers,
                    name="orthanc-upload")
    finally:
        for archive in archives:  # an interrupted batch leaves none open
            archive.zf.close()
    rows.sort(key=lambda r: r[0])
    report = pd.DataFrame([r for _, r in rows],
                          columns=["path", "status", "message", "instance", "series", "study", "patient"])
    report["status"] = pd.Categorical(report["status"], categories=list(UPLOAD_STATUSES))
    bad = report[report.status.isin(["Failure", "Error"])]
    if len(bad) and errors == "raise":
        first = bad.iloc[0]
        raise BulkError(f"{len(bad)} of {len(report)} file(s) were not stored (first: {first['path']}: "
                        f"{first['status']}: {first['message']}). The report is the error's .report; "
                        "pass errors='report' to get it without an error.", report=report)
    return report


# -- delete ---------------------------------------------------------------------------------
def _plan(df: pd.DataFrame, client: OrthancClient, level: str) -> pd.DataFrame:
    """Every instance that deleting the rows' resources at ``level`` removes, from the server."""
    in_frame = set(map(str, df.index.get_level_values("instance")))
    # resource id -> the (patient, study, series) known from the frame
    resources = {}
    for p, st, se, i in df.index:
        key = {"patient": p, "study": st, "series": se, "instance": i}[level]
        resources.setdefault(str(key), (str(p), str(st), str(se), str(i)))
    existing = set(client.list_ids(ROUTES[level]))
    rows = []
    for rid, (p, st, se, i) in resources.items():
        if rid not in existing:
            rows.append({"level": level, "resource": rid, "patient": p if level != "instance" else p,
                         "study": st, "series": se, "instance": i if level == "instance" else None,
                         "in_frame": i in in_frame if level == "instance" else None,
                         "status": "AlreadyGone"})
            continue
        if level == "instance":
            rows.append({"level": level, "resource": rid, "patient": p, "study": st, "series": se,
                         "instance": rid, "in_frame": True, "status": "WouldDelete"})
            continue
        try:
            # the server's own lists: instances outside the frame that go with it are included
            if level == "series":
                series = [{"ID": rid, "ParentStudy": st}]
            else:
                series = client.get_json(f"/{ROUTES[level]}/{rid}/series")
            study_of = {s["ID"]: s.get("ParentStudy") for s in series}
            insts = client.get_json(f"/{ROUTES[level]}/{rid}/instances")
        except OrthancHTTPError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            rows.append({"level": level, "resource": rid, "patient": p, "study": st, "series": se,
                         "instance": None, "in_frame": None, "status": "AlreadyGone"})
            continue
        patient = p
        for inst in insts:
            s_id = inst.get("ParentSeries")
            rows.append({"level": level, "resource": rid, "patient": patient,
                         "study": study_of.get(s_id, st), "series": s_id, "instance": inst["ID"],
                         "in_frame": inst["ID"] in in_frame, "status": "WouldDelete"})
    out = pd.DataFrame(rows, columns=["level", "resource", "patient", "study", "series", "instance",
                                      "in_frame", "status"])
    out["in_frame"] = out["in_frame"].astype("boolean")
    return out


def delete(df: pd.DataFrame, client: OrthancClient, *, level: str = "instance",
           confirm: bool = False, progress=None, max_workers: int | None = None,
           errors: str = "raise") -> pd.DataFrame:
    """Delete the rows' resources at ``level`` from Orthanc - only with ``confirm=True``.

    Parameters
    ----------
    df : pandas.DataFrame
        An Orthanc index frame (or a selection of one).
    client : OrthancClient
    level : {"instance", "series", "study", "patient"}, default "instance"
        ``instance`` deletes exactly the rows. ``series``/``study``/``patient`` delete every
        resource any row belongs to, *with all its instances, in the frame or not*.
    confirm : bool, default False
        ``False``: a dry run, nothing is deleted. ``True``: delete.
    progress : bool or tqdm, optional
        Progress bar over the resources deleted.
    max_workers : int, optional
        Checked like every bulk call's; deletions are sent one at a time whatever its value
        (Orthanc serialises them in its index, so more threads would only wait).
    errors : {"raise", "report"}, default "raise"
        A deletion the server refuses (other than "already gone") is ``Failed`` with its
        ``reason``; ``"raise"`` then raises :class:`~orthanc_pandas.errors.BulkError` after
        the others were tried (its ``.report`` is the frame below). A server that stops
        answering always raises.

    Returns
    -------
    pandas.DataFrame
        One row per instance that goes (per resource already gone), with columns ``level``,
        ``resource`` (the id deleted), ``patient``, ``study``, ``series``, ``instance``,
        ``in_frame`` (whether that instance is a row of ``df``), ``status``:
        ``WouldDelete`` (dry run), ``Deleted``, ``AlreadyGone`` (not on the server any more;
        reported, not raised), ``Failed``, and ``reason`` (why it failed, else ``""``).
        ``attrs["dry_run"]`` says which it was.

    Examples
    --------
    >>> plan = df[df.SeriesDescription == "scout"].orthanc.delete(level="series")   # doctest: +SKIP
    >>> plan.in_frame.value_counts()          # instances outside the frame too?     # doctest: +SKIP
    >>> report = df[df.SeriesDescription == "scout"].orthanc.delete(level="series",
    ...                                                              confirm=True)   # doctest: +SKIP
    """
    check_bulk_args(max_workers, errors)
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {_LEVELS}, got {level!r}.")
    plan = _plan(df, client, level)
    plan["reason"] = ""
    plan.attrs["dry_run"] = not confirm
    if not confirm:
        return plan
    todo = list(dict.fromkeys(plan.loc[plan.status == "WouldDelete", "resource"]))
    gone: set[str] = set()
    refused: dict[str, str] = {}
    with progress_bar(progress, total=len(todo), desc="Deleting", unit=level, min_total=50) as bar:
        for k, rid in enumerate(todo):
            try:
                client.delete(f"/{ROUTES[level]}/{rid}")
            except OrthancHTTPError as exc:
                if exc.status != 404:
                    refused[rid] = str(exc)
                else:
                    gone.add(rid)  # deleted meanwhile (e.g. with its last sibling): fine
            except OrthancConnectionError as exc:
                raise stopped_answering(
                    exc, "delete", k, len(todo), f"{level} deletions",
                    f"the first {k} in the dry-run plan's order are gone; {rid} may or may not "
                    "be. Run the same delete again when the server is back: resources already "
                    "deleted are reported AlreadyGone.") from None
            bar.update(1)
    would = plan.status == "WouldDelete"
    plan.loc[would, "status"] = "Deleted"
    plan.loc[would & plan.resource.isin(gone), "status"] = "AlreadyGone"
    failed = would & plan.resource.isin(refused)
    plan.loc[failed, "status"] = "Failed"
    plan.loc[failed, "reason"] = plan.loc[failed, "resource"].map(refused)
    plan.attrs["dry_run"] = False
    if refused and errors == "raise":
        rid, why = next(iter(refused.items()))
        raise BulkError(f"{len(refused)} of {len(todo)} {level} deletion(s) were refused (first: {rid}: "
                        f"{why}). The report is the error's .report.", report=plan)
    return plan
