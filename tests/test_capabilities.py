"""Capabilities from /system, and the routes chosen by them: on recorded answers of real
servers (every run, no server needed), then against the server under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import orthanc_pandas as op
from orthanc_pandas._frame.tags import resolve_tag
from orthanc_pandas._http.capabilities import Capabilities, stored_tags
from orthanc_pandas._ops import fetch_tags
from orthanc_pandas._ops.read import FIND_INSTANCE_CONTENT, choose_route, find_instance_content
from orthanc_pandas.testing import LocalOrthanc

DATA = Path(__file__).parent / "data"

# -- recorded /system answers (tests/data/system-*.json, from servers of the Debian roots) --
#: recorded answer -> (ApiVersion, requested_tags, labels, extended_find, extended_changes)
RECORDED = {
    "1.10.1": (16, False, False, False, False),
    "1.12.7": (27, True, True, True, True),
    "1.13.0": (31, True, True, True, True),
    # 1.13 with its index in PostgreSQL plugin 5.0: labels, but no extended find or changes
    "1.13.0-postgresql": (31, True, True, False, False),
}


def recorded_system(name: str) -> dict:
    return json.loads((DATA / f"system-{name}.json").read_text())


def recorded_client(name: str) -> op.OrthancClient:
    """A client that believes it talked to the recorded server (it never connects)."""
    client = op.OrthancClient("http://127.0.0.1:9")
    client._system = recorded_system(name)
    return client


@pytest.mark.parametrize("name", RECORDED)
def test_capabilities_of_recorded_servers(name):
    api, requested, labels, find, changes = RECORDED[name]
    caps = Capabilities.from_system(recorded_system(name))
    assert caps.version == name.split("-")[0] and caps.api_version == api
    assert (caps.requested_tags, caps.labels, caps.extended_find, caps.extended_changes) == (
        requested, labels, find, changes)
    if requested:  # the default stored main tags, by level
        assert {"PatientID", "PatientName", "PatientBirthDate"} <= caps.main_tags["patient"]
        assert {"StudyInstanceUID", "AccessionNumber"} <= caps.main_tags["study"]
        assert {"SeriesInstanceUID", "Modality", "BodyPartExamined"} <= caps.main_tags["series"]
        assert {"SOPInstanceUID", "ImagePositionPatient"} <= caps.main_tags["instance"]
        assert caps.stores("ImageOrientationPatient") and not caps.stores("SliceThickness")
    else:
        assert caps.main_tags == {} and not caps.stores("PatientID")


@pytest.mark.parametrize("name", RECORDED)
def test_read_route_of_recorded_servers(name):
    client = recorded_client(name)
    find = RECORDED[name][3]
    assert choose_route(client) == ("find" if find else "lists")
    assert choose_route(client, "lists") == "lists"
    if find:
        assert choose_route(client, "find") == "find"
    else:
        with pytest.raises(ValueError, match=f"needs extended /tools/find.*Orthanc {name.split('-')[0]}"):
            choose_route(client, "find")
    with pytest.raises(ValueError, match="route must be one of"):
        choose_route(client, "fast")
    labels = RECORDED[name][2]
    assert find_instance_content(client) == FIND_INSTANCE_CONTENT + (["Labels"] if labels else [])


@pytest.mark.parametrize("name", RECORDED)
def test_tag_routes_of_recorded_servers(name):
    caps = Capabilities.from_system(recorded_system(name))
    _, requested, _, find, _ = RECORDED[name]
    for route, allowed in [("auto", True), ("instances-tags", True), ("instance", True),
                           ("requested-tags", requested), ("find", find)]:
        if allowed:
            fetch_tags._check_route(route, caps)
        else:
            with pytest.raises(ValueError, match=f"route='{route}' needs"):
                fetch_tags._check_route(route, caps)
    # which tags must come from the files: all of them without requested tags; with them, only
    # those whose stored value would not be each file's own
    expect = {"SliceThickness": not requested,        # read by the server from each file
              "KVP": not requested,
              "ImageComments": True,                  # a long text: only the files have it whole
              "ModalitiesInStudy": True,              # computed by Orthanc, not in the files
              # stored at study level (1.11+): one value per study, not each file's own
              "InstitutionName": True}
    for keyword, from_files in expect.items():
        assert fetch_tags.from_files_only(resolve_tag(keyword), caps) == from_files, keyword
    db, files = fetch_tags._split([resolve_tag("SliceThickness")], caps, "auto")
    assert (len(db), len(files)) == ((1, 0) if requested else (0, 1))


@pytest.mark.parametrize("name", RECORDED)
def test_change_filter_of_recorded_servers(name, monkeypatch):
    client = recorded_client(name)
    sent = []
    monkeypatch.setattr(client, "get_json", lambda path, params=None, **kw: sent.append(params) or {})
    client.changes(7, limit=10, types="NewInstance;NewSeries")
    type_filter = "&type=NewInstance;NewSeries" if RECORDED[name][4] else ""
    assert sent == [f"since=7&limit=10{type_filter}"]  # the ';' sent literally (1.12.7 refuses %3B)


def test_stored_tags_keeps_unknown_private_tags_by_number():
    tags = stored_tags({"Instance": "0008,0018;0029,1010;bad", "Series": ""})
    assert tags["instance"] == {"SOPInstanceUID", "0029,1010"}
    assert tags["series"] == frozenset() and tags["patient"] == frozenset()


# -- the server under test: each run covers its own version's branch ----------------------
@pytest.fixture(scope="module")
def idle_server(orthanc_available):
    """One empty server for the tests below, which only read from it."""
    with LocalOrthanc(name="capabilities") as server:
        yield server


def test_capabilities_match_the_servers_own_system(idle_server):
    client = idle_server.client()
    assert client.capabilities() == Capabilities.from_system(client.system())
    assert client.capabilities().version == client.system()["Version"]


@pytest.mark.orthanc_min("1.12.5")
def test_claimed_capabilities_are_routes_that_answer(idle_server):
    client = idle_server.client()
    caps = client.capabilities()
    assert caps.extended_find and caps.labels and caps.requested_tags and caps.extended_changes
    probe_find = {"Level": "Instance", "Query": {}, "Limit": 1, "Since": 0, "ResponseContent": ["Parent"]}
    assert client.post_json("/tools/find", probe_find) == []
    assert client.count_resources("Instance") == 0
    assert client.get_json("/tools/labels") == []
    # the stored main tags of /system include the classic ones at their level
    assert {"PatientID", "PatientName"} <= caps.main_tags["patient"]
    assert "SOPInstanceUID" in caps.main_tags["instance"]
    assert choose_route(client) == "find"


@pytest.mark.orthanc_before("1.11")
def test_denied_capabilities_are_routes_that_do_not_answer(idle_server):
    client = idle_server.client()
    caps = client.capabilities()
    assert not (caps.extended_find or caps.labels or caps.requested_tags or caps.extended_changes)
    with pytest.raises(op.OrthancHTTPError):
        client.post_json("/tools/count-resources", {"Level": "Instance", "Query": {}})
    with pytest.raises(op.OrthancHTTPError):
        client.get_json("/tools/labels")
    assert choose_route(client) == "lists"
    with pytest.raises(ValueError, match="needs extended /tools/find"):
        op.read_orthanc(client, route="find")


@pytest.mark.orthanc_min("1.11")
def test_extra_main_dicom_tags_are_announced(orthanc_factory):
    server = orthanc_factory(extra_main_dicom_tags={"Instance": ["SliceThickness", "PixelSpacing"]})
    caps = server.client().capabilities()
    assert caps.requested_tags
    assert {"SliceThickness", "PixelSpacing"} <= caps.main_tags["instance"]
    assert caps.stores("SliceThickness") and not caps.stores("KVP")
