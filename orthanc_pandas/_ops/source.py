"""Which server a frame's rows come from, as a client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from orthanc_pandas._frame.contract import frame_level, frame_url
from orthanc_pandas._http.client import OrthancClient, get_client

if TYPE_CHECKING:
    pass


def frame_client(df: pd.DataFrame, client: OrthancClient | str | None = None) -> OrthancClient:
    """``client`` as a client, else the one for ``df``'s server (see ``df.orthanc.client``)."""
    frame_level(df)
    return get_client(client if client is not None else frame_url(df))
