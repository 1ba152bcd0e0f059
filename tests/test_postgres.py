"""LocalPostgres, and read_orthanc against an Orthanc that keeps its index in PostgreSQL.

The same files go to a PostgreSQL-backed and an SQLite-backed Orthanc; the two frames must be
equal (only the provenance differs). Under ``CI=true`` a missing PostgreSQL or
``orthanc-postgresql`` plugin is a failure, never a skip.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import IN_CI, ORTHANC_ROOT, _require_orthanc, corpus_paths

import orthanc_pandas as op
from orthanc_pandas._ops.read import choose_route
from orthanc_pandas.errors import ParseWarning
from orthanc_pandas.testing import (
    POSTGRESQL_INDEX_PLUGIN,
    LocalOrthanc,
    LocalPostgres,
    OrthancNotInstalledError,
    PostgresNotInstalledError,
    find_postgres_bindir,
)
from orthanc_pandas.testing._servers import find_plugin
from orthanc_pandas.testing.synthetic import make_series, to_bytes

STAT_KEYS = {"patients": "CountPatients", "studies": "CountStudies", "series": "CountSeries",
              "instances": "CountInstances"}
# provenance that describes the server rather than the archive (the change log's length
# differs too: the two backends log the refused corpus files differently)
_SERVER_ATTRS = {"url", "name", "read_at", "database_backend", "last_change"}


def _require_postgres() -> None:
    _require_orthanc()
    try:
        find_postgres_bindir()
        find_plugin(POSTGRESQL_INDEX_PLUGIN, ORTHANC_ROOT)
    except OrthancNotInstalledError as exc:
        if IN_CI:
            pytest.fail(f"CI needs PostgreSQL and the orthanc-postgresql plugin: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def postgres_available() -> None:
    _require_postgres()


def _read(url: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)  # some corpus files are invalid on purpose
        return op.read_orthanc(url, progress=False)


@pytest.fixture(scope="module")
def twins(postgres_available):
    """A LocalPostgres, and PostgreSQL- and SQLite-backed Orthancs holding the same files."""
    files = corpus_paths()
    series = [to_bytes(d) for d in make_series(30, 8, 8, seed="pg", patient_id="PG1")]
    with LocalPostgres() as pg, LocalOrthanc(postgres=pg, name="pg") as on_pg, \
            LocalOrthanc(name="sqlite") as on_sqlite:
        for server in (on_pg, on_sqlite):
            server.upload(files)
            assert [a["Status"] for a in server.upload_bytes(series)] == ["Success"] * 30
        yield pg, on_pg, on_sqlite


def test_missing_postgres_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTGRES_BINDIR", str(tmp_path))
    with pytest.raises(PostgresNotInstalledError, match="apt-get install -y postgresql"):
        LocalPostgres()


def test_missing_plugin_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr("orthanc_pandas.testing._servers._PLUGIN_DIRS", (str(tmp_path),))
    with pytest.raises(OrthancNotInstalledError, match="apt-get install -y orthanc-postgresql"):
        find_plugin(POSTGRESQL_INDEX_PLUGIN)


def test_orthanc_needs_a_started_postgres(postgres_available):
    with pytest.raises(op.OrthancPandasError, match="Start the LocalPostgres"):
        LocalOrthanc(postgres=LocalPostgres()).start()


def test_index_is_in_postgres(twins):
    _, on_pg, on_sqlite = twins
    assert "PostgreSQLIndex" in (on_pg.client().system()["DatabaseBackendPlugin"] or "")
    assert on_sqlite.client().system()["DatabaseBackendPlugin"] is None


def test_route_on_postgres_follows_its_capabilities(twins):
    """Debian's PostgreSQL plugin 5.0 has no extended find even under Orthanc 1.13: the GET
    lists are used there, and the frame still equals the SQLite one (test below)."""
    _, on_pg, on_sqlite = twins
    pg_caps, sqlite_caps = on_pg.client().capabilities(), on_sqlite.client().capabilities()
    assert pg_caps.version == sqlite_caps.version
    assert not pg_caps.extended_find  # plugin 5.0; SQLite on 1.13 has it, on 1.10 neither
    assert sqlite_caps.extended_find == (on_sqlite.client().version_tuple >= (1, 12, 5))
    assert choose_route(on_pg.client()) == "lists"


def test_counts_match_statistics(twins):
    _, on_pg, _ = twins
    df = _read(on_pg.url)
    stats = on_pg.client().statistics()
    counts = df.attrs["orthanc"]["counts"]
    assert counts == {k: int(stats[v]) for k, v in STAT_KEYS.items()}
    assert df.orthanc.counts == counts
    assert len(df) == int(stats["CountInstances"]) > 100
    assert "PostgreSQLIndex" in df.attrs["orthanc"]["database_backend"]


def test_same_frame_as_sqlite(twins):
    _, on_pg, on_sqlite = twins
    a, b = _read(on_pg.url), _read(on_sqlite.url)
    # Orthanc ids hash the DICOM UIDs, so both servers give the same index; the row order is
    # the frame's own sort, not the backend's listing order
    pd.testing.assert_frame_equal(a, b)
    pa_, pb = a.attrs["orthanc"], b.attrs["orthanc"]
    assert {k: v for k, v in pa_.items() if k not in _SERVER_ATTRS} == \
        {k: v for k, v in pb.items() if k not in _SERVER_ATTRS}
    assert (pa_["url"], pa_["name"]) == (on_pg.url, "pg")


def test_postgres_pages_the_instance_list_in_concurrent_streams(twins):
    """On a PostgreSQL index the instance list is read as contiguous offset ranges at once
    (benchmarks/postgres_concurrency.py measured it faster); small pages put many page and
    range boundaries in the list, and the frame must still equal the SQLite twin's."""
    from orthanc_pandas._ops.read import POSTGRES_LIST_STREAMS, list_streams

    _, on_pg, on_sqlite = twins
    assert list_streams(on_pg.client()) == POSTGRES_LIST_STREAMS > 1
    assert list_streams(on_sqlite.client()) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        a = op.read_orthanc(on_pg.url, progress=False, page_size=7, route="lists")
    pd.testing.assert_frame_equal(a, _read(on_sqlite.url))


def test_select_and_refresh(twins):
    pg, _, _ = twins
    # a second Orthanc on the same PostgreSQL server, in its own database: the twins stay as they are
    config = {"PostgreSQL": {"Database": pg.create_database("refresh")}}
    with LocalOrthanc(postgres=pg, config=config) as server:
        server.upload_bytes(to_bytes(d) for d in make_series(20, 8, 8, seed="pg", patient_id="PG1"))
        df = op.read_orthanc(server.url)
        sel = df.orthanc.select(PatientID="PG1", InstanceNumber=(1, 10))
        assert len(sel) == 10 and set(sel.InstanceNumber) == set(range(1, 11))
        # a new series, and a deletion (which Orthanc does not log)
        server.upload_bytes(to_bytes(d) for d in make_series(5, 8, 8, seed="pg-new", patient_id="PG2"))
        gone = sel.index[0]
        server.client().delete(f"/instances/{gone[3]}")
        refreshed, refreshed_sel = df.orthanc.refresh(), sel.orthanc.refresh()
        fresh = op.read_orthanc(server.url)
        pd.testing.assert_frame_equal(refreshed, fresh)
        assert len(refreshed) == 20 + 5 - 1
        assert gone not in refreshed_sel.index and len(refreshed_sel) == 9
        pd.testing.assert_frame_equal(refreshed_sel, fresh.orthanc.select(PatientID="PG1", InstanceNumber=(1, 10)))


def test_series_first_read_and_mirror_on_postgres(twins, tmp_path):
    """Issue 24 on the PostgreSQL index: the series-first frame equals the instance frame's
    series(), and a mirror after uploads and deletions equals a fresh read (the plugin has no
    extended find: deletions are found from the instance id list there)."""
    pg, _, _ = twins
    config = {"PostgreSQL": {"Database": pg.create_database("mirror")}, "StableAge": 3600}
    with LocalOrthanc(postgres=pg, config=config) as server:
        server.upload_bytes(to_bytes(d) for d in make_series(6, 8, 8, seed="pg-m", patient_id="PM1"))
        server.upload_bytes(to_bytes(d) for d in make_series(4, 8, 8, seed="pg-n", patient_id="PM2"))
        series = op.read_orthanc(server.url, level="series")
        from_instances = op.read_orthanc(server.url).orthanc.series()
        shared = [c for c in series.columns if c not in ("slice_count", "slice_spacing")]
        pd.testing.assert_frame_equal(series[shared], from_instances[shared], check_like=False)
        path = tmp_path / "pg.parquet"
        first = op.mirror(server.url, path)
        server.upload_bytes(to_bytes(d) for d in make_series(3, 8, 8, seed="pg-o", patient_id="PM3"))
        server.client().delete(f"/instances/{first.index[0][3]}")
        got = op.mirror(server.url, path)
        pd.testing.assert_frame_equal(got, op.read_orthanc(server.url))
        pd.testing.assert_frame_equal(pd.read_parquet(path), got)


@pytest.fixture
def shared_tmp():
    """A temporary folder the postgres system user can enter (pytest's tmp_path is private
    to root, and as root the server runs as postgres)."""
    base = Path(tempfile.mkdtemp(prefix="op-pg-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_postgres_storage_survives_stop(postgres_available, shared_tmp):
    store = shared_tmp / "pg"
    with LocalPostgres(storage=store) as pg, LocalOrthanc(postgres=pg) as server:
        server.upload_bytes(to_bytes(d) for d in make_series(3, 8, 8, seed="keep"))
        workdir = pg.workdir
        assert pg.uri == f"postgresql://postgres@127.0.0.1:{pg.port}/orthanc"
        assert "running" in repr(pg)
    assert not workdir.exists() and (store / "PG_VERSION").exists()
    assert pg.process is None and "stopped" in repr(pg)
    # the index is in PostgreSQL: a new Orthanc with empty storage still lists the instances
    with LocalPostgres(storage=store) as pg, LocalOrthanc(postgres=pg) as server:
        assert server.client().statistics()["CountInstances"] == 3
