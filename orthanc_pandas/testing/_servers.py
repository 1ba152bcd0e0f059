"""Throw-away Orthanc and PostgreSQL servers, and current Orthanc in a Debian root (see the package docstring)."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas.errors import OrthancPandasError

DEFAULT_BINARY = "/usr/sbin/Orthanc"


_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")


DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"


POSTGRESQL_INDEX_PLUGIN = "libOrthancPostgreSQLIndex.so"


INSTALL_HINT = ("Install it with `sudo apt-get install -y orthanc orthanc-dicomweb` (Debian/Ubuntu), "
                "or point the ORTHANC_BINARY environment variable at an Orthanc executable.")


class OrthancNotInstalledError(OrthancPandasError, FileNotFoundError):
    """No Orthanc executable (or plugin) was found on this machine."""


def find_orthanc_binary(binary: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> str:
    """Path of the Orthanc executable: ``binary``, ``$ORTHANC_BINARY``, /usr/sbin/Orthanc, PATH.

    With ``root`` (a root file system from :func:`install_debian_orthanc`), the executable
    inside it; the path returned is the one seen from inside the root.
    """
    if root is not None:
        inside = Path(root) / DEFAULT_BINARY.lstrip("/")
        if inside.is_file() and os.access(inside, os.X_OK):
            return DEFAULT_BINARY
        raise OrthancNotInstalledError(
            f"{root} holds no Orthanc ({inside} is missing). Build the root again with "
            "`orthanc-pandas install-orthanc --suite sid` (or remove the folder).")
    explicit = binary or os.environ.get("ORTHANC_BINARY")
    if explicit:  # asked for by name: no silent fallback to another Orthanc
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return str(explicit)
        raise OrthancNotInstalledError(f"The Orthanc executable {explicit} does not exist or is not "
                                       f"executable. {INSTALL_HINT}")
    for c in (DEFAULT_BINARY, shutil.which("Orthanc")):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    raise OrthancNotInstalledError(f"No Orthanc server executable found. {INSTALL_HINT}")


def find_plugin(name: str, root: str | os.PathLike | None = None) -> str:
    """Full path of an Orthanc plugin shared library shipped by the Debian packages.

    With ``root``, the plugin is looked for inside that root file system and its path is given
    as the server inside the root sees it.
    """
    base = Path(root) if root is not None else Path("/")
    if os.path.isabs(name) and (base / name.lstrip("/")).exists():
        return name
    for d in _PLUGIN_DIRS:
        p = os.path.join(d, name)
        if (base / p.lstrip("/")).exists():
            return p
    pkg = {DICOMWEB_PLUGIN: "orthanc-dicomweb", POSTGRESQL_INDEX_PLUGIN: "orthanc-postgresql"}.get(name, "?")
    where = f" of the root {root}" if root is not None else ""
    raise OrthancNotInstalledError(
        f"Orthanc plugin {name} not found in {', '.join(_PLUGIN_DIRS)}{where}. Install it with "
        f"`sudo apt-get install -y {pkg}`."
    )


#: Debian suites whose Orthanc :func:`install_debian_orthanc` knows: sid 1.13, trixie 1.12.7
DEBIAN_SUITES = ("sid", "trixie")


_ROOT_PACKAGES = ("orthanc", "orthanc-dicomweb", "orthanc-postgresql")


def cache_dir() -> Path:
    """``$ORTHANC_PANDAS_CACHE``, else ``$XDG_CACHE_HOME/orthanc-pandas`` (``~/.cache/...``)."""
    env = os.environ.get("ORTHANC_PANDAS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orthanc-pandas"


def orthanc_root(suite: str = "sid") -> Path:
    """Where :func:`install_debian_orthanc` keeps the root file system of ``suite``."""
    return cache_dir() / "roots" / suite


def install_debian_orthanc(suite: str = "sid", dest: str | os.PathLike | None = None, *,
                           mirror: str | None = None, quiet: bool = True) -> Path:
    """Install Debian ``suite``'s Orthanc (+ DICOMweb, PostgreSQL plugins) into its own root.

    ``debootstrap --variant=minbase`` into a temporary folder beside ``dest``, renamed into
    place once complete, so an interrupted run leaves nothing half-built. An existing root is
    reused as it is (about a minute and ~500 MB the first time). Needs root privileges and the
    ``debootstrap`` package; never changes this machine's apt sources or packages.

    Parameters
    ----------
    suite : {"sid", "trixie"}, default "sid"
        sid has Orthanc 1.13, trixie 1.12.7.
    dest : path, optional
        Default :func:`orthanc_root` (``~/.cache/orthanc-pandas/roots/<suite>``).
    mirror : str, optional
        A Debian mirror; debootstrap's default otherwise.

    Returns
    -------
    pathlib.Path
        The root, to pass as ``LocalOrthanc(root=...)`` or ``$ORTHANC_ROOT``.

    Examples
    --------
    >>> root = install_debian_orthanc("sid")                            # doctest: +SKIP
    >>> with LocalOrthanc(root=root) as server:                         # doctest: +SKIP
    ...     server.client().version
    '1.13.0'
    """
    dest = Path(dest) if dest is not None else orthanc_root(suite)
    if (dest / DEFAULT_BINARY.lstrip("/")).is_file():
        return dest
    if os.geteuid() != 0:
        raise OrthancNotInstalledError(
            f"Installing Debian {suite}'s Orthanc into {dest} needs root (debootstrap and chroot). "
            f"Run `sudo orthanc-pandas install-orthanc --suite {suite}`.")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        raise OrthancNotInstalledError("debootstrap is needed to install a current Orthanc: "
                                       "`sudo apt-get install -y debootstrap`.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{suite}-", dir=dest.parent))
    cmd = [debootstrap, "--variant=minbase", f"--include={','.join(_ROOT_PACKAGES)}", suite, str(work)]
    if mirror:
        cmd.append(mirror)
    try:
        done = subprocess.run(cmd, capture_output=quiet, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not (work / DEFAULT_BINARY.lstrip("/")).is_file():
            tail = "\n".join(((done.stdout or "") + (done.stderr or "")).splitlines()[-15:])
            raise OrthancNotInstalledError(f"debootstrap of Debian {suite} failed "
                                           f"(exit {done.returncode}):\n{tail}")
        for deb in (work / "var/cache/apt/archives").glob("*.deb"):  # not needed to run
            deb.unlink()
        work.rename(dest)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _default_root() -> Path | None:
    env = os.environ.get("ORTHANC_ROOT")
    return Path(env) if env else None


POSTGRES_INSTALL_HINT = ("Install it with `sudo apt-get install -y postgresql` (Debian/Ubuntu), or "
                         "point the POSTGRES_BINDIR environment variable at the folder holding "
                         "initdb and postgres.")


class PostgresNotInstalledError(OrthancNotInstalledError):
    """No PostgreSQL server binaries (initdb, postgres) were found on this machine."""


def find_postgres_bindir(bindir: str | os.PathLike | None = None) -> Path:
    """Folder of PostgreSQL's server binaries: ``bindir``, ``$POSTGRES_BINDIR``,
    ``pg_config --bindir``, the newest ``/usr/lib/postgresql/*/bin``, then ``PATH``."""
    def complete(d) -> bool:
        return all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "postgres", "pg_isready", "createdb"))

    explicit = bindir or os.environ.get("POSTGRES_BINDIR")
    if explicit:
        if complete(explicit):
            return Path(explicit)
        raise PostgresNotInstalledError(f"{explicit} does not hold PostgreSQL's initdb, postgres, "
                                        f"pg_isready and createdb. {POSTGRES_INSTALL_HINT}")
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(out.stdout.strip())
    # Debian's server binaries are not on PATH; pg_config may come from a client-only package
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda d: [int(x) if x.isdigit() else 0 for x in Path(d).parent.name.split(".")],
                         reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for d in candidates:
        if d and complete(d):
            return Path(d)
    raise PostgresNotInstalledError(f"No PostgreSQL server (initdb, postgres) found. {POSTGRES_INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (Linux ``/proc``);
    None when this cannot be told (no ``/proc``, no permission)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


def _end_process(p: subprocess.Popen, sig: int, timeout: float) -> None:
    """Send ``sig`` and wait; kill the process if it has not ended after ``timeout`` seconds."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class LocalOrthanc:
    """A throw-away Orthanc server on 127.0.0.1, as a context manager.

    Parameters
    ----------
    users : dict, optional
        ``{"user": "password"}`` turns HTTP Basic authentication on.
    dicomweb : bool, default False
        Load the DICOMweb plugin (Debian package ``orthanc-dicomweb``).
    config : dict, optional
        Extra Orthanc configuration, merged over the defaults (e.g. ``{"OverwriteInstances": True}``).
    storage : path, optional
        Keep storage and index in this folder (kept after :meth:`stop`, so a benchmark can reuse
        a filled server). By default a temporary folder, removed on stop.
    binary : path, optional
        The Orthanc executable; defaults to ``$ORTHANC_BINARY`` or ``/usr/sbin/Orthanc``.
    plugins : list of str, optional
        More plugin libraries (file names in Debian's plugin folder, or full paths).
    port : int, optional
        HTTP port; a free one by default.
    startup_timeout : float, default 60
        Seconds to wait for the server to answer.
    postgres : LocalPostgres, optional
        Keep the index in this (started) PostgreSQL server instead of SQLite, through the
        ``orthanc-postgresql`` index plugin; DICOM files stay in ``storage``. Extra plugin
        options go in ``config={"PostgreSQL": {...}}``.
    root : path, optional
        Run the Orthanc installed in this root file system (see :func:`install_debian_orthanc`:
        Debian sid's 1.13 on a bookworm machine) instead of the machine's own; its plugins are
        used too. Default ``$ORTHANC_ROOT``, else the machine's Orthanc. Needs root privileges
        (``unshare`` and ``chroot``); ``/tmp``, the work folder and ``storage`` are visible
        inside at the same paths.
    extra_main_dicom_tags : dict, optional
        ``{"Instance": ["SliceThickness", ...], "Series": [...]}``: more tags that the server
        stores in its index (Orthanc >= 1.11's ``ExtraMainDicomTags``), for instances stored
        after the start.
    aet : str, optional
        Turn the DICOM server on with this AE title (at most 16 characters), on a free
        127.0.0.1 port chosen now (``dicom_port``), so that other servers' configurations can
        name it before it starts. Off by default.
    modalities : dict, optional
        ``{"NAME": other_local_orthanc or ("AET", "host", port)}``: remote DICOM nodes
        (``DicomModalities``) this server may query, move from, get from and store to.
        Registering one turns the DICOM server on. See also :func:`link`.
    peers : dict, optional
        ``{"NAME": other_local_orthanc}``: Orthanc peers (``OrthancPeers``, HTTP) to store to.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:PORT`` (``https`` with ``SslEnabled``).

    Examples
    --------
    >>> from orthanc_pandas.testing import LocalOrthanc
    >>> with LocalOrthanc() as server:                      # doctest: +SKIP
    ...     server.upload(pydicom.data.get_testdata_files("CT_small*"))
    ...     df = orthanc_pandas.read_orthanc(server.url)

    With the index in PostgreSQL:

    >>> with LocalPostgres() as pg, LocalOrthanc(postgres=pg) as server:   # doctest: +SKIP
    ...     server.client().system()["DatabaseBackendPlugin"]
    '/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so'
    """

    def __init__(self, *, users: Mapping[str, str] | None = None, dicomweb: bool = False,
                 config: Mapping[str, Any] | None = None, storage: str | os.PathLike | None = None,
                 binary: str | None = None, plugins: Iterable[str] = (), port: int | None = None,
                 startup_timeout: float = 60.0, name: str = "orthanc-pandas-test",
                 postgres: LocalPostgres | None = None, root: str | os.PathLike | None = None,
                 extra_main_dicom_tags: Mapping[str, Iterable[str]] | None = None,
                 aet: str | None = None, modalities: Mapping[str, Any] | None = None,
                 peers: Mapping[str, LocalOrthanc] | None = None):
        # an Orthanc named explicitly (argument or $ORTHANC_BINARY) wins over $ORTHANC_ROOT
        explicit = binary or os.environ.get("ORTHANC_BINARY")
        self.root = Path(root) if root is not None else (None if explicit else _default_root())
        self.binary = find_orthanc_binary(binary, self.root)
        self.users = dict(users or {})
        self.dicomweb = dicomweb
        self.extra_config = dict(config or {})
        if extra_main_dicom_tags:
            self.extra_config["ExtraMainDicomTags"] = {
                level: list(tags) for level, tags in extra_main_dicom_tags.items()}
        self.plugins = [find_plugin(p, self.root) for p in plugins]
        if dicomweb:
            self.plugins.append(find_plugin(DICOMWEB_PLUGIN, self.root))
        self.postgres = postgres
        if postgres is not None:
            self.plugins.append(find_plugin(POSTGRESQL_INDEX_PLUGIN, self.root))
        self.persistent = storage is not None
        self._storage_arg = Path(storage) if storage is not None else None
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.name = name
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.port: int | None = None
        self._client: OrthancClient | None = None
        self._dicom_started = False
        self.modalities: dict[str, Any] = dict(modalities or {})
        self.peers: dict[str, LocalOrthanc] = dict(peers or {})
        if aet is not None and not 0 < len(aet) <= 16:
            raise ValueError(f"An AE title has 1 to 16 characters; {aet!r} has {len(aet)}.")
        self.aet: str | None = aet or (f"OP{os.getpid() % 10000}{free_port() % 10000}"[:16]
                                       if self.modalities else None)
        # chosen now: peers' configurations must name it before this server starts
        self.dicom_port: int | None = free_port() if self.aet else None

    # -- DICOM networking -----------------------------------------------------------------
    @property
    def dicom(self) -> bool:
        """Whether this server runs a DICOM server (it has an AE title)."""
        return self.aet is not None

    def modality_entry(self) -> dict:
        """How other servers reach this one over DICOM (a ``DicomModalities`` entry)."""
        if not self.dicom:
            raise RuntimeError("This LocalOrthanc has no DICOM server: pass aet= when creating it.")
        return {"AET": self.aet, "Host": "127.0.0.1", "Port": self.dicom_port}

    def peer_entry(self) -> dict:
        """How other servers reach this one over HTTP (an ``OrthancPeers`` entry)."""
        entry: dict[str, Any] = {"Url": self.url}
        auth = self._auth()
        if auth:
            entry["Username"], entry["Password"] = auth
        return entry

    def add_modality(self, name: str, remote) -> None:
        """Register ``remote`` (a LocalOrthanc or ``(aet, host, port)``) as modality ``name``.

        Before :meth:`start` it goes into the configuration; on a running server through
        ``PUT /modalities/{name}`` (kept in memory by the server).
        """
        self.modalities[name] = remote
        if self.process is not None and self.process.poll() is None:
            self.client().request("PUT", f"/modalities/{name}", json_body=_modality(remote))

    def add_peer(self, name: str, remote: LocalOrthanc) -> None:
        """Register the (started) ``remote`` as Orthanc peer ``name`` (``PUT /peers/{name}``)."""
        self.peers[name] = remote
        if self.process is not None and self.process.poll() is None:
            self.client().request("PUT", f"/peers/{name}", json_body=remote.peer_entry())

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.extra_config.get("SslEnabled") else "http"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("The server is not started; use `with LocalOrthanc() as server:` or .start().")
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def storage_dir(self) -> Path:
        assert self.workdir is not None
        return self._storage_arg if self._storage_arg is not None else self.workdir / "storage"

    def _config(self) -> dict:
        cfg: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "HttpPort": self.port,
            "DicomServerEnabled": self.dicom,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": list(self.plugins),
            "HttpTimeout": 60,
            "StableAge": 2,
            "ConcurrentJobs": 2,
        }
        if self.dicom:
            cfg.update({"DicomAet": self.aet, "DicomPort": self.dicom_port,
                        "DicomModalities": {n: _modality(m) for n, m in self.modalities.items()},
                        "OrthancPeers": {n: p.peer_entry() for n, p in self.peers.items()
                                         if p.port is not None},
                        "DicomScuTimeout": 10, "DicomAssociationCloseDelay": 0})
        if self.dicomweb:
            cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}"}
        if self.postgres is not None:
            cfg["PostgreSQL"] = self.postgres.orthanc_config()
        for k, v in self.extra_config.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            else:
                cfg[k] = v
        return cfg

    def start(self) -> LocalOrthanc:
        """Start the server and wait until it answers ``/system``."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self.postgres is not None and not self.postgres.running:
            raise OrthancPandasError("Start the LocalPostgres before the LocalOrthanc that keeps its "
                                     "index there: `with LocalPostgres() as pg, LocalOrthanc(postgres=pg):`")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-pandas-"))
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(3):  # a free port can be taken between our probe and Orthanc's bind
            self.port = self.requested_port or self.port or free_port()
            cfg_path = self.workdir / "orthanc.json"
            cfg_path.write_text(json.dumps(self._config(), indent=1))
            logdir = self.workdir / "logs"
            logdir.mkdir(exist_ok=True)
            self._stdout = open(self.workdir / "stdout.log", "ab")
            self.process = subprocess.Popen(
                self._command([self.binary, f"--logdir={logdir}", str(cfg_path)]),
                stdout=self._stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                # DCMTK leaves Nagle's algorithm on unless $TCP_NODELAY is set: each C-STORE of a
                # small file then waits for a delayed ACK (~90 ms); measured 40x slower C-MOVE
                env={**os.environ, "TCP_NODELAY": os.environ.get("TCP_NODELAY", "1")},
            )
            if self._wait_ready():
                self._start_watchdog()
                self._dicom_started = self.dicom
                for name, peer in self.peers.items():  # peers started after this config was written
                    if peer.port is not None:
                        self.client().request("PUT", f"/peers/{name}", json_body=peer.peer_entry())
                return self
            last_error = self.log_tail()
            self._terminate()
            if not self.requested_port:
                self.port = None
        self._cleanup()
        raise OrthancPandasError(f"Orthanc did not start ({self.binary}). Last log lines:\n{last_error}")

    def _command(self, argv: list[str]) -> list[str]:
        """``argv``, run inside ``self.root`` when there is one.

        A private mount namespace (``unshare --mount``) binds the folders the server needs at
        the same paths inside the root, then ``chroot`` runs the server there; when the process
        ends the namespace and its mounts go with it, so nothing stays mounted on the host.
        The process started is the server itself (``exec`` all the way), so signals reach it.
        """
        if self.root is None:
            return argv
        if os.geteuid() != 0:
            raise OrthancNotInstalledError(f"Running the Orthanc of {self.root} needs root "
                                           "(unshare and chroot).")
        binds = []
        for d in sorted({"/tmp", str(self.workdir), str(self.storage_dir)}):
            if any(d != b and d.startswith(b.rstrip("/") + "/") for b in binds):
                continue  # already visible through a parent folder
            binds.append(d)
        script = ["set -e"]
        for d in binds:
            inside = shlex.quote(str(self.root / d.lstrip("/")))
            script += [f"mkdir -p {inside}", f"mount --bind {shlex.quote(d)} {inside}"]
        script.append(f"exec chroot {shlex.quote(str(self.root))} " + " ".join(map(shlex.quote, argv)))
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        client = OrthancClient(self.url, auth=self._auth(), verify=False, timeout=(1, 5), retries=0)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    client.get_json("/system")
                except OrthancPandasError:
                    time.sleep(0.05)
                    continue
                # an answer from another server handed the same port (ours then fails to bind
                # and exits): keep waiting, the exit is seen above and the start is retried
                if _listens_on(self.process.pid, self.port) is not False:
                    return True
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def _auth(self):
        if not self.users:
            return None
        user, pw = next(iter(self.users.items()))
        return (user, pw)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines Orthanc printed (for diagnosing a failed start)."""
        if self.workdir is None:
            return ""
        text = []
        for p in [self.workdir / "stdout.log", *sorted((self.workdir / "logs").glob("*"))]:
            with contextlib.suppress(OSError):
                text.extend(p.read_text(errors="replace").splitlines())
        return "\n".join(text[-lines:])

    def _terminate(self, sig=signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is None:
            return
        _end_process(self.process, sig, timeout)
        with contextlib.suppress(Exception):
            self._stdout.close()
        self.process = None

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would; files are kept for restart()."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> LocalOrthanc:
        """Stop (gracefully) and start again on the same port with the same storage."""
        self._terminate()
        self.requested_port = self.port
        return self.start()

    #: How :meth:`stop` ends a server with temporary storage when not told: gracefully (the
    #: default), or, when set to ``True`` (a test suite's conftest may), by killing it at once
    fast_stop: bool = False

    def stop(self, *, fast: bool | None = None) -> None:
        """Stop the server and remove its temporary files (not a ``storage=`` folder).

        Parameters
        ----------
        fast : bool, optional
            Kill the server's process group (SIGKILL) instead of asking it to shut down
            (which takes Orthanc about 2.5 s). Only for temporary storage, which is removed
            right after: a ``storage=`` folder is always closed gracefully so that it can be
            reused. Default :attr:`fast_stop`.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        self._stop_watchdog()
        if fast is None:
            fast = self.fast_stop
        if fast and not self.persistent:
            self._kill_group()
        self._terminate()
        self._cleanup()

    #: A process that stops the server and removes its temporary folder when this Python
    #: process dies without stop() (a notebook kernel restarted or killed); see _watchdog.py
    watchdog: bool = True

    def _start_watchdog(self) -> None:
        self._watchdog = None
        if not self.watchdog or self.process is None:
            return
        self._watchdog = subprocess.Popen(
            # run by path in isolated mode: standard library only, no import of the package
            # (pandas...) for a process that mostly sleeps
            [sys.executable, "-I", str(Path(__file__).with_name("_watchdog.py")), str(os.getpid()),
             str(self.process.pid), str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _stop_watchdog(self) -> None:
        dog = getattr(self, "_watchdog", None)
        if dog is not None:
            with contextlib.suppress(ProcessLookupError):
                dog.kill()
            with contextlib.suppress(Exception):
                dog.wait(10)
            self._watchdog = None

    def _kill_group(self) -> None:
        """SIGKILL the server's whole process group (it is a session leader, see start())."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        _end_process(self.process, signal.SIGKILL, 10)
        with contextlib.suppress(Exception):
            self._stdout.close()
        self.process = None

    def _cleanup(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None and self.process.poll() is None else "stopped"
        where = f" at {self.url}" if self.port else ""
        return f"<LocalOrthanc {state}{where}>"

    # -- convenience ----------------------------------------------------------------------
    def client(self, **kwargs) -> OrthancClient:
        """An :class:`~orthanc_pandas._http.client.OrthancClient` for this server (with its first user)."""
        if kwargs:
            return OrthancClient(self.url, auth=self._auth(), **kwargs)
        if self._client is None:
            self._client = OrthancClient(self.url, auth=self._auth(),
                                         verify=False if self.scheme == "https" else True)
        return self._client

    def upload_bytes(self, blobs: Iterable[bytes], *, batch_bytes: int = 64 << 20) -> list[dict]:
        """Store DICOM files given as bytes, zipped into few requests (fast for many files).

        Returns Orthanc's answers (one dict per stored instance).
        """
        results: list[dict] = []
        buf, size, zf = io.BytesIO(), 0, None

        def flush():
            nonlocal buf, size, zf
            if zf is None:
                return
            zf.close()
            ans = self.client().post_json("/instances", data=buf.getvalue(),
                                          headers={"Content-Type": "application/zip"}, idempotent=True)
            results.extend(ans if isinstance(ans, list) else [ans])
            buf, size, zf = io.BytesIO(), 0, None

        for i, blob in enumerate(blobs):
            if zf is None:
                zf = zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED)
            zf.writestr(f"{i:08d}.dcm", blob)
            size += len(blob)
            if size >= batch_bytes:
                flush()
        flush()
        return results

    def upload(self, paths: Iterable[str | os.PathLike]) -> dict[str, dict]:
        """Store DICOM files one request each; returns ``{path: Orthanc's answer or error}``.

        A file the server refuses is reported (``{"Status": "Error", "Message": ...}``), not raised.
        """
        out: dict[str, dict] = {}
        client = self.client()
        for p in paths:
            data = Path(p).read_bytes()
            try:
                out[str(p)] = client.post_json("/instances", data=data, idempotent=True,
                                               headers={"Content-Type": "application/dicom"})
            except OrthancPandasError as exc:
                out[str(p)] = {"Status": "Error", "Message": str(exc)}
        return out


def _modality(remote) -> dict:
    if isinstance(remote, LocalOrthanc):
        return remote.modality_entry()
    if isinstance(remote, Mapping):
        return dict(remote)
    aet, host, port = remote
    return {"AET": aet, "Host": host, "Port": int(port)}


def link(*servers: LocalOrthanc, peers: bool = True) -> None:
    """Register every server as a DICOM modality (and Orthanc peer) of every other one.

    Each is registered under its AE title. Servers must have a DICOM server (``aet=``); they
    may be started or not (a server not started gets the entries in its configuration).

    Examples
    --------
    >>> a, b = LocalOrthanc(aet="A"), LocalOrthanc(aet="B")      # doctest: +SKIP
    >>> link(a, b)                                              # doctest: +SKIP
    >>> with a, b:                                              # doctest: +SKIP
    ...     orthanc_pandas._ops.gateway.echo(a.url, "B")
    True
    """
    for s in servers:
        if not s.dicom:
            raise RuntimeError(f"{s!r} has no DICOM server: create it with LocalOrthanc(aet=...).")
    for s in servers:
        for other in servers:
            if other is s:
                continue
            s.add_modality(other.aet, other)
            if peers and other.port is not None:
                s.add_peer(other.aet, other)
            elif peers:
                s.peers[other.aet] = other


class LocalPostgres:
    """A throw-away PostgreSQL server on 127.0.0.1, as a context manager.

    Runs Debian's (or any) ``initdb`` and ``postgres`` with the data in a temporary folder,
    on a free port, with trust authentication (loopback and a private unix socket only), and
    creates one database. When running as root, the server runs as the ``postgres`` system
    user (PostgreSQL refuses root). Everything is removed on stop, except a ``storage=`` folder.

    Parameters
    ----------
    database : str, default "orthanc"
        The database created for the client (the superuser is ``postgres``, no password).
    storage : path, optional
        Keep the data directory in this folder (kept after :meth:`stop` and reused by the next
        start, so a benchmark can keep a filled server). By default a temporary folder.
    settings : dict, optional
        Server settings (``postgres -c name=value``) merged over the defaults, which trade
        durability for speed as a throw-away server may: ``fsync``, ``synchronous_commit`` and
        ``full_page_writes`` off. A clean :meth:`stop` still writes everything to disk.
    bindir : path, optional
        Folder of the server binaries; see :func:`find_postgres_bindir`.
    port : int, optional
        TCP port; a free one by default.
    user : str, default "postgres"
        System user that runs the server when started as root.
    startup_timeout : float, default 60
        Seconds to wait for the server to accept connections.

    Attributes
    ----------
    host, port, database, username, password
        How to connect (``password`` is empty: trust authentication).
    uri : str
        ``postgresql://postgres@127.0.0.1:PORT/DATABASE``.

    Examples
    --------
    >>> from orthanc_pandas.testing import LocalOrthanc, LocalPostgres
    >>> with LocalPostgres() as pg, LocalOrthanc(postgres=pg) as server:  # doctest: +SKIP
    ...     server.upload(pydicom.data.get_testdata_files("CT_small*"))
    ...     df = orthanc_pandas.read_orthanc(server.url)
    >>> pg.uri                                                             # doctest: +SKIP
    'postgresql://postgres@127.0.0.1:41234/orthanc'
    """

    DEFAULT_SETTINGS: dict[str, str] = {"fsync": "off", "synchronous_commit": "off",
                                        "full_page_writes": "off"}
    host = "127.0.0.1"
    username = "postgres"
    password = ""

    def __init__(self, *, database: str = "orthanc", storage: str | os.PathLike | None = None,
                 settings: Mapping[str, Any] | None = None, bindir: str | os.PathLike | None = None,
                 port: int | None = None, user: str = "postgres", startup_timeout: float = 60.0):
        self.bindir = find_postgres_bindir(bindir)
        self.database = database
        self.persistent = storage is not None
        self._storage_arg = Path(storage).resolve() if storage is not None else None
        self.settings = {**self.DEFAULT_SETTINGS, **{k: str(v) for k, v in (settings or {}).items()}}
        self.requested_port = port
        self.system_user = user
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None
        return self._storage_arg if self._storage_arg is not None else self.workdir / "data"

    @property
    def uri(self) -> str:
        if self.port is None:
            raise RuntimeError("The server is not started; use `with LocalPostgres() as pg:` or .start().")
        return f"postgresql://{self.username}@{self.host}:{self.port}/{self.database}"

    def orthanc_config(self) -> dict:
        """The ``"PostgreSQL"`` section of an Orthanc configuration using this server as index."""
        if self.port is None:
            raise RuntimeError("Start the LocalPostgres before configuring an Orthanc with it.")
        return {"EnableIndex": True, "EnableStorage": False, "Host": self.host, "Port": self.port,
                "Database": self.database, "Username": self.username, "Password": self.password,
                # a throw-away server has one Orthanc; no lock lets a killed one restart at once
                "Lock": False}

    def _run_as(self) -> dict:
        """Popen arguments that drop root privileges (PostgreSQL will not run as root)."""
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            pw = pwd.getpwnam(self.system_user)
        except KeyError:
            raise PostgresNotInstalledError(
                f"PostgreSQL refuses to run as root and there is no `{self.system_user}` system user "
                f"to run it as. {POSTGRES_INSTALL_HINT}") from None
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": pw.pw_dir, "LC_ALL": "C"}}

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam(self.system_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kw = self._run_as()
        kw.setdefault("env", {**os.environ, "LC_ALL": "C"})
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/", **kw)

    def start(self) -> LocalPostgres:
        """Initialise the data directory if needed, start the server, create the database."""
        if self.running:
            return self
        if self.workdir is None:
            # socket and log live here; a short path keeps the socket under the 107-byte limit
            self.workdir = Path(tempfile.mkdtemp(prefix="op-pg-"))
            self._own(self.workdir)
        try:
            self._init_data_dir()
            last_error = ""
            for _ in range(3):  # a free port can be taken between our probe and the bind
                self.port = self.requested_port or free_port()
                if self._launch():
                    self.create_database(self.database)
                    return self
                last_error = self.log_tail()
                self._terminate()
                if self.requested_port or "postmaster.pid" in last_error:  # not a port problem
                    break
            raise OrthancPandasError(f"PostgreSQL did not start ({self.bindir}/postgres). "
                                     f"Last log lines:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _init_data_dir(self) -> None:
        data = self.data_dir
        if (data / "PG_VERSION").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        if any(data.iterdir()):
            raise OrthancPandasError(f"{data} is neither empty nor a PostgreSQL data directory.")
        self._own(data)
        data.chmod(0o700)
        done = self._run("initdb", "-D", str(data), "-U", self.username, "--auth=trust",
                         "--encoding=UTF8", "--locale=C", "--no-sync")
        if done.returncode != 0:
            hint = ""
            if os.geteuid() == 0:
                hint = (f" The `{self.system_user}` user must be able to enter every parent folder "
                        f"of {data}.")
            raise OrthancPandasError(f"initdb failed:{hint}\n{done.stdout}{done.stderr}")

    def _launch(self) -> bool:
        assert self.workdir is not None
        settings = {"listen_addresses": self.host, "port": str(self.port),
                    "unix_socket_directories": str(self.workdir), **self.settings}
        args = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        self._log = open(self.workdir / "postgres.log", "ab")
        kw = self._run_as()
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, cwd="/", **kw)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            ready = self._run("pg_isready", "-q", "-h", self.host, "-p", str(self.port),
                              "-U", self.username, "-d", "postgres", timeout=30)
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists (for more Orthancs on one server).

        Examples
        --------
        >>> pg.create_database("second")                                     # doctest: +SKIP
        >>> LocalOrthanc(postgres=pg, config={"PostgreSQL": {"Database": "second"}})  # doctest: +SKIP
        """
        done = self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.username, name)
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise OrthancPandasError(f"createdb {name} failed: {done.stderr.strip()}")
        return name

    def log_tail(self, lines: int = 30) -> str:
        """The last lines PostgreSQL printed (for diagnosing a failed start)."""
        if self.workdir is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _terminate(self, timeout: float = 60) -> None:
        if self.process is None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: ends sessions, checkpoints, exits
        _end_process(self.process, signal.SIGINT, timeout)
        with contextlib.suppress(Exception):
            self._log.close()
        self.process = None

    def stop(self) -> None:
        """Stop the server and remove its temporary files (not a ``storage=`` folder)."""
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.port = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f" at {self.host}:{self.port}/{self.database}" if self.port else ""
        return f"<LocalPostgres {state}{where}>"
