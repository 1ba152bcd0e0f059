"""Capabilities from /system, and the routes chosen by them, against real servers."""

from __future__ import annotations

import pytest

import orthanc_pandas as op
from orthanc_pandas._http.capabilities import Capabilities, stored_tags
from orthanc_pandas._ops.read import choose_route


def test_capabilities_match_what_the_server_answers(empty_server):
    client = empty_server.client()
    caps = client.capabilities()
    system = client.system()
    assert caps.version == system["Version"]
    # every capability claimed is a route that answers; every one denied is one that does not
    probe_find = {"Level": "Instance", "Query": {}, "Limit": 1, "Since": 0, "ResponseContent": ["Parent"]}
    if caps.extended_find:
        assert client.post_json("/tools/find", probe_find) == []
        assert client.count_resources("Instance") == 0
    else:
        with pytest.raises(op.OrthancHTTPError):
            client.post_json("/tools/count-resources", {"Level": "Instance", "Query": {}})
    if caps.labels:
        assert client.get_json("/tools/labels") == []
    else:
        with pytest.raises(op.OrthancHTTPError):
            client.get_json("/tools/labels")
    if caps.requested_tags:
        # the stored main tags of /system include the classic ones at their level
        assert {"PatientID", "PatientName"} <= caps.main_tags["patient"]
        assert "SOPInstanceUID" in caps.main_tags["instance"]
    # a 1.10 server has none of the newer routes
    if client.version_tuple < (1, 11):
        assert caps == Capabilities.from_system(system)
        assert not (caps.extended_find or caps.labels or caps.requested_tags or caps.extended_changes)


def test_extra_main_dicom_tags_are_announced(orthanc_factory):
    server = orthanc_factory(extra_main_dicom_tags={"Instance": ["SliceThickness", "PixelSpacing"]})
    caps = server.client().capabilities()
    if not caps.requested_tags:
        pytest.skip(f"Orthanc {caps.version} has no ExtraMainDicomTags (1.11+)")
    assert {"SliceThickness", "PixelSpacing"} <= caps.main_tags["instance"]
    assert caps.stores("SliceThickness") and not caps.stores("KVP")


def test_route_follows_capabilities(empty_server):
    client = empty_server.client()
    if client.capabilities().extended_find:
        assert choose_route(client) == "find"
    else:
        assert choose_route(client) == "lists"
        with pytest.raises(ValueError, match="needs extended /tools/find"):
            op.read_orthanc(client, route="find")
    assert choose_route(client, "lists") == "lists"
    with pytest.raises(ValueError, match="route must be one of"):
        choose_route(client, "fast")


def test_stored_tags_keeps_unknown_private_tags_by_number():
    tags = stored_tags({"Instance": "0008,0018;0029,1010;bad", "Series": ""})
    assert tags["instance"] == {"SOPInstanceUID", "0029,1010"}
    assert tags["series"] == frozenset() and tags["patient"] == frozenset()
