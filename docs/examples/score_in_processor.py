"""The anomaly score in your own coffea processor, on NanoAOD: a histogram of the score per region.

Run it on a NanoAOD file with a model directory from ``eventlm train``::

    python docs/examples/score_in_processor.py runs/default nano.root --executor futures --workers 2

The regions count jets with eventlm's kinematic cuts (pT > 20 GeV, |eta| < 2.8; its reader also applies jet ID):
CR = 4 or 5 jets, SR = 6 or more. tests/test_ml_tools.py runs this file with the iterative, futures and
dask executors and checks its scores against ``eventlm score`` on the same file.
"""

from __future__ import annotations

import argparse

import awkward as ak
import hist
import numpy as np
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from eventlm.analysis.ml import EventlmScorer

REGIONS = {"CR": (4, 5), "SR": (6, None)}  # jet multiplicity: inclusive bounds, None = no upper bound


class ScoreProcessor(processor.ProcessorABC):
    """Fill ``score``: dataset x region x anomaly score, weighted by genWeight."""

    def __init__(self, model_dir, score="anomaly_score", bins=(60, 0.0, 12.0)):
        self.scorer = EventlmScorer(model_dir, reader="nanoaod")  # the model loads lazily, once per worker
        self.score = score
        self.bins = bins

    def process(self, events):
        dataset = events.metadata["dataset"]
        scores = self.scorer(events)[self.score]  # one value per event, in chunk order
        jets = events.Jet[(events.Jet.pt > 20) & (abs(events.Jet.eta) < 2.8)]
        n_jets = ak.to_numpy(ak.num(jets))
        weight = ak.to_numpy(events.genWeight) if "genWeight" in events.fields else np.ones(len(events))
        h = hist.Hist(
            hist.axis.StrCategory(list(REGIONS), name="region", label="Region"),
            hist.axis.Regular(*self.bins, name="score", label="Anomaly score"),
            storage=hist.storage.Weight(),
        )
        for region, (lo, hi) in REGIONS.items():
            mask = (n_jets >= lo) & (n_jets <= (hi if hi is not None else np.inf))
            h.fill(region=region, score=ak.to_numpy(scores)[mask], weight=weight[mask])
        return {dataset: {"score": h, "n_events": len(events)}}

    def postprocess(self, accumulator):
        return accumulator


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--executor", choices=("iterative", "futures"), default="iterative")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    executor = (processor.IterativeExecutor() if args.executor == "iterative"
                else processor.FuturesExecutor(workers=args.workers))
    run = processor.Runner(executor, schema=NanoAODSchema, chunksize=50_000)
    out = run({"nanoaod": args.files}, ScoreProcessor(args.model), treename="Events")
    h = out["nanoaod"]["score"]
    for region in REGIONS:
        print(f"{region}: {h[{'region': region}].sum().value:.1f} weighted events")
    return out


if __name__ == "__main__":
    main()
