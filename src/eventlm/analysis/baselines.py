"""Unsupervised baselines on fixed-length event features, trained on the same background split.

- ``isolation_forest``: scikit-learn's ``IsolationForest``; score = ``-score_samples`` (higher = more
  anomalous).
- ``autoencoder``: a dense autoencoder (torch), score = per-event reconstruction MSE.
- ``deep_svdd``: Deep SVDD (Ruff et al. 2018, one-class): a bias-free network maps events close to
  a fixed centre ``c`` (the mean of the initial outputs); score = squared distance to ``c``.
- ``flow``: a masked autoregressive flow (Papamakarios et al. 2017; ``zuko.flows.MAF``), trained by
  maximum likelihood on dequantised features; score = ``-log p(x)`` of the standardized features.
- ``combined``: the Dark Machines challenge's "Combined" detector (arXiv:2105.14027): the mean of
  the Deep SVDD and flow scores, each turned into ``-log`` of its background tail probability on
  held-out background events (:class:`BackgroundTail`). It reuses the fitted Deep SVDD and flow.

Every baseline standardizes its inputs with the training statistics (:class:`Standardizer`) and is
seeded: the same seed gives the same scores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from eventlm.analysis.features import Standardizer
from eventlm.runtime import torch_threads

log = logging.getLogger(__name__)

NAMES = ("isolation_forest", "autoencoder", "deep_svdd", "flow", "combined")
#: the fitted baselines the "combined" detector averages
COMBINED_PARTS = ("deep_svdd", "flow")


@dataclass
class TrainSettings:
    """Training settings of the torch baselines (small on purpose: they run on a laptop CPU)."""

    epochs: int = 20
    #: the flow's epochs (None: twice ``epochs``; its validation likelihood still improves after 20)
    flow_epochs: int | None = None
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

    #: fraction of the training events held out for the validation loss (the best epoch is kept); 0: none
    validation_fraction: float = 0.0
    #: gradient-norm clip of every step and a cosine decay of the learning rate over the epochs (None/False: neither)
    clip_norm: float | None = None
    cosine_schedule: bool = False

    def _fit(self, x):
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.net = self._network(x.shape[1])
        data = torch.from_numpy(x)
        valid = None
        if self.validation_fraction > 0:
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed + 1))
            n_valid = max(1, int(round(self.validation_fraction * len(data))))
            valid, data = data[order[:n_valid]], data[order[n_valid:]]
        self._prepare(data)
        if valid is not None:
            valid = self._validation_input(valid)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.settings.learning_rate,
                               weight_decay=self.settings.weight_decay)
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.settings.epochs)
                    if self.cosine_schedule else None)
        n = len(data)
        self.loss_curve: list[float] = []
        self.validation_curve: list[float] = []
        best = None
        for epoch in range(self.settings.epochs):
            perm = torch.randperm(n, generator=gen)  # a new order every epoch
            total = 0.0
            self.net.train()
            for start in range(0, n, self.settings.batch_size):
                rows = perm[start:start + self.settings.batch_size]
                loss = self._batch_loss(self._training_input(data[rows], rows)).mean()
                opt.zero_grad()
                loss.backward()
                if self.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip_norm)
                opt.step()
                total += loss.detach().item() * len(rows)
            if schedule is not None:
                schedule.step()
            self.loss_curve.append(total / n)
            if valid is not None:
                value = self._validation_loss(valid)
                self.validation_curve.append(value)
                if np.isfinite(value) and (best is None or value < best[0]):  # a NaN epoch is never kept
                    best = (value, epoch, {k: v.detach().clone() for k, v in self.net.state_dict().items()})
            log.debug("%s epoch %d loss %.4f", self.name, epoch, self.loss_curve[-1])
        if best is not None:
            self.best_epoch = best[1]
            self.net.load_state_dict(best[2])
        elif valid is not None:
            log.warning("%s: no epoch with a finite validation loss; the last epoch's weights are kept", self.name)

    def _batch_loss(self, batch):
        """Per-event loss ``(B,)`` of a batch ``(B, F)``."""
        return self._loss(self.net(batch), batch)

    def _training_input(self, batch, rows):
        """What a training step sees of ``batch`` (``rows``: its rows of the training data)."""
        return batch

    def _validation_input(self, valid):
        """The held-out events as the validation loss sees them (fixed over the epochs)."""
        return valid

    def _validation_loss(self, valid) -> float:
        import torch

        self.net.eval()
        with torch.no_grad():
            return float(self._batch_loss(valid).mean())

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
                out.append(self._batch_loss(batch).numpy())
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


class FlowBaseline(_TorchBaseline):
    """Masked autoregressive flow (``zuko.flows.MAF``): ``transforms`` affine autoregressive layers, each
    a MADE of ``hidden`` units, alternating the feature order; score = ``-log p(x)`` (nats, of the
    standardized features: the standardization's Jacobian is the same for every event).

    Dequantisation: the features hold point masses (the kind one-hot, and every feature of an absent
    object, zero-padded) where a density is infinite. The atoms (:func:`atoms_of`, from the training
    events) are every value of a column with at most two distinct values (the one-hot) and, in the
    other columns, every value held by at least ``atom_fraction`` of the events (the padding). At
    training time every entry on an atom gets Gaussian noise of width ``dequantization``
    (standardized units, i.e. 0.1 of the column's background standard deviation), drawn anew each
    step from a generator seeded with ``seed``; continuous entries are never blurred. Scoring sees
    the features as they are (no noise). ``validation_fraction`` of the training events are held out
    (dequantised once, so the two losses compare): the epoch with the lowest validation loss gives
    the weights kept. Adam with the flow's own learning rate, a cosine decay over the epochs and
    gradients clipped at norm 5 (the first steps of a flow on these features can blow up).
    """

    name = "flow"
    validation_fraction = 0.1
    clip_norm = 5.0
    cosine_schedule = True

    def __init__(self, seed: int = 0, settings: TrainSettings | None = None, *, transforms: int = 4,
                 hidden: tuple[int, ...] = (128, 128), dequantization: float = 0.1, atom_fraction: float = 0.01,
                 learning_rate: float | None = 2e-3):
        super().__init__(seed, settings)
        if learning_rate is not None:  # its own (None: the settings'); clipped steps and a cosine decay
            self.settings = replace(self.settings, learning_rate=learning_rate)
        epochs = self.settings.flow_epochs or 2 * self.settings.epochs
        self.settings = replace(self.settings, epochs=epochs)
        self.transforms = transforms
        self.hidden = tuple(hidden)
        self.dequantization = dequantization
        self.atom_fraction = atom_fraction

    def _network(self, n_in):
        from eventlm.extras import require

        zuko = require("zuko", "analysis", "the flow baseline")
        return zuko.flows.MAF(n_in, transforms=self.transforms, hidden_features=self.hidden)

    def _prepare(self, x):
        import torch

        self.atoms = atoms_of(x.numpy(), self.atom_fraction)  # per column: its point masses
        self._on_atom = torch.from_numpy(on_atoms(x.numpy(), self.atoms))
        self._noise = torch.Generator().manual_seed(self.seed + 2)

    def _training_input(self, batch, rows):
        return self._dequantised(batch, self._on_atom[rows], self._noise)

    def _validation_input(self, valid):
        import torch

        # dequantised like the training events (noise drawn once), so the two losses compare
        on_atom = torch.from_numpy(on_atoms(valid.numpy(), self.atoms))
        return self._dequantised(valid, on_atom, torch.Generator().manual_seed(self.seed + 3))

    def _dequantised(self, batch, on_atom, generator):
        import torch

        noise = torch.randn(batch.shape, generator=generator, dtype=batch.dtype)
        return batch + self.dequantization * noise * on_atom

    def _batch_loss(self, batch):
        return -self.net().log_prob(batch)


def atoms_of(x: np.ndarray, fraction: float, max_levels: int = 2) -> list[np.ndarray]:
    """Per column of ``x``: its point masses. Every value of a column with at most ``max_levels``
    distinct values (a discrete column: the kind one-hot), else the values held by at least
    ``fraction`` of its rows (the zero padding of an absent object)."""
    out = []
    for column in np.asarray(x).T:
        values, counts = np.unique(column, return_counts=True)
        out.append(values if len(values) <= max_levels else values[counts >= fraction * len(column)])
    return out


def on_atoms(x: np.ndarray, atoms: list[np.ndarray]) -> np.ndarray:
    """``x.shape`` float mask: 1 where an entry sits on one of its column's atoms, else 0."""
    x = np.asarray(x)
    mask = np.zeros(x.shape, dtype=x.dtype)
    for j, values in enumerate(atoms):
        mask[:, j] = np.isin(x[:, j], values)
    return mask


class BackgroundTail:
    """``-log`` of the background tail probability ``P_B(score >= s)``, fitted on background scores.

    Up to the ``k``-th largest background score ``t`` (``k = max(10, 1 %)`` of them) the fraction of the
    background events scoring at least ``s``; above ``t`` an exponential tail ``(k/n) exp(-(s - t)/tau)``
    with ``tau`` the mean excess of the top ``k`` over ``t`` (peaks over threshold), so scores beyond
    every background event stay ordered instead of sharing one value.
    """

    def __init__(self, background_scores):
        s = np.sort(np.asarray(background_scores, dtype=np.float64))
        if len(s) < 2 or not np.all(np.isfinite(s)):
            raise ValueError("BackgroundTail needs at least two finite background scores")
        self.sorted = s
        n = len(s)
        self.k = min(n, max(10, int(np.ceil(0.01 * n))))
        self.threshold = s[n - self.k]
        excess = s[n - self.k:] - self.threshold
        self.tau = max(float(excess.sum()) / max(self.k - 1, 1), 1e-12)

    def __call__(self, scores) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        n = len(self.sorted)
        above = s > self.threshold
        out = np.empty(s.shape)
        out[~above] = -np.log((n - np.searchsorted(self.sorted, s[~above], side="left")) / n)
        out[above] = -np.log(self.k / n) + (s[above] - self.threshold) / self.tau  # in logs: no underflow
        return out


class CombinedBaseline(Baseline):
    """The Dark Machines challenge's "Combined" detector: the mean over ``parts`` (already fitted
    baselines, Deep SVDD and the flow) of ``-log P_B(score_part >= s)`` (:class:`BackgroundTail`).

    ``fit(x)`` takes the features of held-out background events, NOT those the parts were trained on
    (their scores there are biased low); it fits only the tails, never the parts.
    """

    name = "combined"

    def __init__(self, parts: dict[str, Baseline], seed: int = 0):
        super().__init__(seed)
        self.parts = dict(parts)

    def fit(self, x: np.ndarray) -> Baseline:
        self.tails = {name: BackgroundTail(part.score(x)) for name, part in self.parts.items()}
        self.n_calibration = len(x)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "tails"):
            raise RuntimeError(f"{self.name}: call fit() before score()")
        return np.mean([self.tails[name](part.score(x)) for name, part in self.parts.items()], axis=0)


REGISTRY: dict[str, type[Baseline]] = {
    "isolation_forest": IsolationForestBaseline,
    "autoencoder": AutoencoderBaseline,
    "deep_svdd": DeepSVDDBaseline,
    "flow": FlowBaseline,
}

#: Names in tables and legends.
LABELS = {"isolation_forest": "Isolation forest", "autoencoder": "Dense AE", "deep_svdd": "Deep SVDD",
          "flow": "Flow (MAF)", "combined": "Combined (Deep SVDD + flow)"}


def make_baseline(name: str, seed: int = 0, settings: TrainSettings | None = None) -> Baseline:
    """A fresh baseline by name (``combined`` is not made here: :func:`fit_baselines` builds it from
    its fitted parts)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    return cls(seed) if cls is IsolationForestBaseline else cls(seed, settings)


def fit_baselines(
    x_train: np.ndarray, names=NAMES, *, seed: int = 0, settings: TrainSettings | None = None,
    x_calibration: np.ndarray | None = None,
) -> dict[str, Baseline]:
    """Fit every named baseline on the same background training features.

    ``combined`` reuses the Deep SVDD and flow fitted here (fitting them when they are not named) and
    calibrates their scores on ``x_calibration``: background events none of them was trained on (the
    studies pass the model's validation split). Without it, a seeded 20 % of ``x_train`` is held out
    from every baseline's training for that calibration.
    """
    names = tuple(names)
    unknown = [n for n in names if n not in REGISTRY and n != CombinedBaseline.name]
    if unknown:
        raise ValueError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(NAMES)}")
    combined = CombinedBaseline.name in names
    if combined and x_calibration is None:
        order = np.random.default_rng([seed, 13]).permutation(len(x_train))
        n_cal = len(x_train) // 5
        x_calibration, x_train = x_train[np.sort(order[:n_cal])], x_train[np.sort(order[n_cal:])]
        log.info("combined: %d of the background training events held out for its calibration", n_cal)
    to_fit = [n for n in names if n != CombinedBaseline.name]
    if combined:
        to_fit += [n for n in COMBINED_PARTS if n not in to_fit]
    fitted = {}
    for name in to_fit:
        log.info("fitting baseline %s on %d background events", name, len(x_train))
        t0 = time.perf_counter()
        fitted[name] = make_baseline(name, seed, settings).fit(x_train)
        log.info("baseline %s fitted in %.1f s", name, time.perf_counter() - t0)
    if combined:
        log.info("calibrating baseline combined on %d held-out background events", len(x_calibration))
        fitted[CombinedBaseline.name] = CombinedBaseline({n: fitted[n] for n in COMBINED_PARTS}, seed).fit(
            x_calibration)
    return {name: fitted[name] for name in names}
