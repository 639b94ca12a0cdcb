"""The golden-JSON luminosity mask of collision data (coffea's :class:`coffea.lumi_tools.LumiMask`).

``[study] lumi_mask = "Cert_....json"`` keeps, in every data sample, only the events whose
(run, luminosity block) the JSON certifies; the results say how many each sample kept. Nothing is
downloaded: the file is the user's (the CMS certification JSON of the period analysed).
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import EventFormatError


def load_lumi_mask(path):
    """coffea's ``LumiMask`` of ``path``, after checking that the file is a golden JSON
    (``{"run": [[first, last], ...], ...}``); a malformed file is a one-line error naming it."""
    from coffea.lumi_tools import LumiMask

    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise EventFormatError(path, "lumi_mask: no such file") from None
    except (OSError, ValueError) as err:
        raise EventFormatError(path, f"lumi_mask: not a JSON file ({err})") from None
    if not isinstance(content, dict) or not all(
            isinstance(r, list) and all(isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) for v in x)
                                        for x in r) for r in content.values()):
        raise EventFormatError(path, 'lumi_mask: expected {"run": [[first lumi, last lumi], ...], ...}')
    return LumiMask(str(path))


def apply_lumi_mask(events: ak.Array, path, sample: str) -> tuple[ak.Array, str]:
    """The events of a data sample inside the certified luminosity blocks, and a line saying how many."""
    for field in ("run", "luminosityBlock"):
        if field not in events.fields:
            raise EventFormatError(path, f"lumi_mask: the events of {sample} carry no {field} (read them from "
                                         "NanoAOD or PHYSLITE, which keep the event identity)")
    mask = load_lumi_mask(path)
    keep = np.asarray(mask(ak.to_numpy(events.run), ak.to_numpy(events.luminosityBlock)), dtype=bool)
    note = f"lumi mask {Path(path).name}: {sample} keeps {int(keep.sum())} of {len(keep)} events"
    return events[keep], note
