"""Which server a frame's rows come from, as a client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from orthanc_pandas._frame.contract import frame_level, frame_url
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas.errors import OrthancPandasError

if TYPE_CHECKING:
    pass


def frame_client(df: pd.DataFrame, client: OrthancClient | str | None = None) -> OrthancClient:
    """``client`` as a client, else the one for ``df``'s server (see ``df.orthanc.client``)."""
    frame_level(df)
    return get_client(client if client is not None else frame_url(df))


def volume_client(vol, client: OrthancClient | str | None = None) -> OrthancClient:
    """``client`` as a client, else the one for the server ``vol`` was read from
    (``vol.attrs["orthanc_url"]``, set by ``df.orthanc.volume()``)."""
    if client is not None:
        return get_client(client)
    url = vol.attrs.get("orthanc_url")
    if not url:
        raise OrthancPandasError(
            "This volume does not say which Orthanc server it comes from (attrs['orthanc_url'] "
            "is missing: it was built by volume_from_datasets, by an older orthanc-pandas, or "
            "its attrs were dropped). Pass client=op.connect(url), or sources=[datasets] to "
            "build the SEG without a server.")
    return get_client(url)
