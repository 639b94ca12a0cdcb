"""Unsupervised baselines on fixed-length event features, trained on the same background split.

- ``isolation_forest``: scikit-learn's ``IsolationForest``; score = ``-score_samples`` (higher = more
  anomalous).
- ``autoencoder``: a dense autoencoder (torch), score = per-event reconstruction MSE.
- ``deep_svdd``: Deep SVDD (Ruff et al. 2018, one-class): a bias-free network maps events close to
  a fixed centre ``c`` (the mean of the initial outputs); score = squared distance to ``c``.

Every baseline standardizes its inputs with the training statistics (:class:`Standardizer`) and is
seeded: the same seed gives the same scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from eventlm.analysis.features import Standardizer
from eventlm.runtime import torch_threads

log = logging.getLogger(__name__)

NAMES = ("isolation_forest", "autoencoder", "deep_svdd")


@dataclass
class TrainSettings:
    """Training settings of the torch baselines (small on purpose: they run on a laptop CPU)."""

    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6


class Baseline:
    """Interface: ``fit(x_train)`` on background features, ``score(x)`` (higher = more anomalous)."""

    name: str = ""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.standardizer: Standardizer | None = None

    def fit(self, x: np.ndarray) -> Baseline:
        self.standardizer = Standardizer.fit(x)
        self._fit(self.standardizer(x))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if self.standardizer is None:
            raise RuntimeError(f"{self.name}: call fit() before score()")
        return np.asarray(self._score(self.standardizer(x)), dtype=np.float64)

    def _fit(self, x: np.ndarray) -> None:  # pragma: no cover (abstract)
        raise NotImplementedError

    def _score(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover (abstract)
        raise NotImplementedError


class IsolationForestBaseline(Baseline):
    name = "isolation_forest"

    def __init__(self, seed: int = 0, n_estimators: int = 200):
        super().__init__(seed)
        self.n_estimators = n_estimators

    def _fit(self, x):
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=1)
        self.model.fit(x)

    def _score(self, x):
        return -self.model.score_samples(x)


class _TorchBaseline(Baseline):
    def __init__(self, seed: int = 0, settings: TrainSettings | None = None):
        super().__init__(seed)
        self.settings = settings or TrainSettings()

    def fit(self, x: np.ndarray) -> Baseline:
        with torch_threads(1):
            return super().fit(x)

    def score(self, x: np.ndarray) -> np.ndarray:
        with torch_threads(1):
            return super().score(x)

    def _network(self, n_in: int):  # pragma: no cover (abstract)
        raise NotImplementedError

    def _loss(self, out, x):  # (B,) per-event loss
        raise NotImplementedError

    def _fit(self, x):
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.net = self._network(x.shape[1])
        self._prepare(torch.from_numpy(x))
        opt = torch.optim.Adam(self.net.parameters(), lr=self.settings.learning_rate,
                               weight_decay=self.settings.weight_decay)
        data = torch.from_numpy(x)
        n = len(data)
        self.loss_curve: list[float] = []
        for epoch in range(self.settings.epochs):
            perm = torch.randperm(n, generator=gen)  # a new order every epoch
            total = 0.0
            self.net.train()
            for start in range(0, n, self.settings.batch_size):
                batch = data[perm[start:start + self.settings.batch_size]]
                loss = self._loss(self.net(batch), batch).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.detach().item() * len(batch)
            self.loss_curve.append(total / n)
            log.debug("%s epoch %d loss %.4f", self.name, epoch, self.loss_curve[-1])

    def _prepare(self, x) -> None:
        """Hook run once before training (Deep SVDD fixes its centre here)."""

    def _score(self, x):
        import torch

        self.net.eval()
        out = []
        with torch.no_grad():
            data = torch.from_numpy(x)
            for start in range(0, len(data), 8192):
                batch = data[start:start + 8192]
                out.append(self._loss(self.net(batch), batch).numpy())
        return np.concatenate(out) if out else np.zeros(0)


class AutoencoderBaseline(_TorchBaseline):
    """Dense autoencoder ``n -> 64 -> 32 -> 8 -> 32 -> 64 -> n``; score = reconstruction MSE."""

    name = "autoencoder"

    def _network(self, n_in):
        from torch import nn

        return nn.Sequential(
            nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8),
            nn.ReLU(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, n_in),
        )

    def _loss(self, out, x):
        return ((out - x) ** 2).mean(dim=1)


class DeepSVDDBaseline(_TorchBaseline):
    """Deep SVDD ``n -> 64 -> 32 -> 16`` without biases (a bias lets the map collapse onto ``c``)."""

    name = "deep_svdd"

    def _network(self, n_in):
        from torch import nn

        return nn.Sequential(
            nn.Linear(n_in, 64, bias=False), nn.LeakyReLU(), nn.Linear(64, 32, bias=False),
            nn.LeakyReLU(), nn.Linear(32, 16, bias=False),
        )

    def _prepare(self, x):
        import torch

        with torch.no_grad():
            c = self.net(x).mean(dim=0)
        # keep coordinates away from 0, where the trivial all-zero solution lies (as in Ruff et al.)
        c[(c.abs() < 0.1) & (c < 0)] = -0.1
        c[(c.abs() < 0.1) & (c >= 0)] = 0.1
        self.center = c

    def _loss(self, out, x):
        return ((out - self.center) ** 2).sum(dim=1)


REGISTRY: dict[str, type[Baseline]] = {
    "isolation_forest": IsolationForestBaseline,
    "autoencoder": AutoencoderBaseline,
    "deep_svdd": DeepSVDDBaseline,
}

#: Names in tables and legends.
LABELS = {"isolation_forest": "Isolation forest", "autoencoder": "Dense AE", "deep_svdd": "Deep SVDD"}


def make_baseline(name: str, seed: int = 0, settings: TrainSettings | None = None) -> Baseline:
    if name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    return cls(seed) if cls is IsolationForestBaseline else cls(seed, settings)


def fit_baselines(
    x_train: np.ndarray, names=NAMES, *, seed: int = 0, settings: TrainSettings | None = None
) -> dict[str, Baseline]:
    """Fit every named baseline on the same background training features."""
    out = {}
    for name in names:
        log.info("fitting baseline %s on %d background events", name, len(x_train))
        out[name] = make_baseline(name, seed, settings).fit(x_train)
    return out
