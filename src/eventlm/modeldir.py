"""The model directory: the one contract between training and everything that uses a model.

::

    from eventlm.modeldir import ModelDir

    md = ModelDir("runs/lut")
    md.kind                                   # "language model" or "classifier"
    scorer = md.open_scorer(device="cpu")     # checked whole now, weights loaded on first use
    test = md.select(background, "test")      # the background rows the model never saw

Every command and library function that uses a model directory goes through :class:`ModelDir`:
``eventlm score`` (one process or ``--workers N``), :class:`eventlm.analysis.ml.EventlmScorer`, the
coffea processor, ``sample``, ``export``, ``finetune``, the calibration and the studies.

What a directory holds
----------------------
A **language model** (``eventlm train``): ``best.pt`` (weights of the best validation epoch),
``checkpoint.pt`` (the last epoch, with optimizer and RNG states), ``tokenizer.json`` (plus the
weights of a learned tokenizer), ``config.toml``, ``split.json``, ``metrics.json``.

A **classifier** (``eventlm finetune``): ``classifier.pt`` (backbone and head), ``classifier.json``
(the run's settings and numbers; written last, so it marks the directory complete) and
``tokenizer.json``. A classifier is never written into a language model's directory.

Which rows it was trained on
----------------------------
``split.json`` records the train / validation / test rows of the background as row keys
(:mod:`eventlm.rows`: a hash of each event's content, unique by construction within the input), never
as ``event_id``, which repeats across files. :meth:`ModelDir.select` (and :meth:`ModelDir.in_split`)
is the one selection every caller uses. A ``split.json`` from before row keys (event ids) is read
where the given events' ids are unique, and refused in one line where they repeat.

What is derived from its weights
--------------------------------
``calibration.json`` (``calibration_last.json`` for ``which="last"``), ``sampling.npz`` and an
export's ``preprocess.json`` are stamped with the SHA-256 of the weights file they were made from
(:meth:`ModelDir.stamp`); :meth:`ModelDir.check_stamp` refuses, in one line, a file made from other
weights or carrying no stamp (:class:`eventlm.errors.StaleFileError`).

Checks
------
:meth:`ModelDir.check` refuses, with one line naming the file and the problem:

- a missing directory or file (:class:`eventlm.errors.MissingModelFileError`, a ``FileNotFoundError``);
- a directory holding both a language model and a classifier;
- a checkpoint that is not one: random bytes, an empty file, a pickle of something else, or a pickle
  that would run code (every load is ``torch.load(weights_only=True)``: nothing is executed);
- a ``tokenizer.json`` that is not the one the checkpoint was trained with: the checkpoint records
  the tokenizer's kind and parameters (bins, learned-weights digest), and their fingerprint must
  match the file's, so another run's tokenizer with the same vocabulary size is refused;
- a calibration made from other weights, or holding a value that is not finite;
- a device torch cannot use here (``cuda:7`` on a machine with one GPU, ``banana``).

Tensors are always read onto the CPU first (``map_location="cpu"``) and then moved to the device,
so a directory trained on a GPU loads on a machine without one; a learned tokenizer is built on the
device it is loaded for, whatever device it was trained on.

Layers: this module imports the scorers (:mod:`eventlm.score`, :mod:`eventlm.classifier`) inside
:meth:`ModelDir.open_scorer`; they never import it (they are handed the :class:`ModelDir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pickle
import re
import warnings
import zipfile
from pathlib import Path

from eventlm.atomic import save_torch, write_json
from eventlm.errors import CheckpointMismatchError, MissingModelFileError, ModelDirError, StaleFileError

log = logging.getLogger(__name__)

BEST = "best.pt"
LAST = "checkpoint.pt"
TOKENIZER = "tokenizer.json"
CONFIG = "config.toml"
SPLIT = "split.json"
METRICS = "metrics.json"
CLASSIFIER_INFO = "classifier.json"
CLASSIFIER_WEIGHTS = "classifier.pt"
#: The derived files, by the weights they belong to (``which``).
CALIBRATION = {"best": "calibration.json", "last": "calibration_last.json"}
SAMPLING = "sampling.npz"
#: What a model directory holds (:attr:`ModelDir.kind`).
LANGUAGE_MODEL = "language model"
CLASSIFIER = "classifier"
#: The three parts of the background a model directory records (``split.json``).
SPLITS = ("train", "validation", "test")
#: Keys every eventlm checkpoint holds.
CHECKPOINT_KEYS = ("model", "model_config", "run_config", "objective")
#: Keys of a classifier's weights file.
CLASSIFIER_KEYS = ("model_config", "objective", "state_dict", "tokenizer_fingerprint")
#: ``split.json``'s ``rows`` field when it records row keys (:mod:`eventlm.rows`).
ROW_KEYS = "row_keys"

__all__ = ["CLASSIFIER", "LANGUAGE_MODEL", "SPLITS", "ModelDir", "check_device", "read_checkpoint",
           "tokenizer_fingerprint"]


def check_device(device) -> str:
    """``device`` as text if torch can use it here, else :class:`ModelDirError` in one line."""
    import torch

    text = str(device)
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ModelDirError(f"--device {text}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ModelDirError(f"--device {text}: torch sees no CUDA device on this machine")
        if dev.index is not None and dev.index >= n:
            raise ModelDirError(f"--device {text}: this machine has {n} CUDA device(s) (cuda:0 .. cuda:{n - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ModelDirError(f"--device {text}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ModelDirError(f"--device {text}: eventlm runs on cpu, cuda or mps, not {dev.type}")
    return text


def read_checkpoint(path, map_location="cpu", *, keys=CHECKPOINT_KEYS) -> dict:
    """A checkpoint file as a dict (``torch.load(weights_only=True)``) holding ``keys``, or one-line errors."""
    import torch

    path = Path(path)
    if not path.exists():
        raise MissingModelFileError(f"no checkpoint {path}")
    if path.is_dir():
        raise ModelDirError(f"{path}: is a directory, not a checkpoint")
    if path.stat().st_size == 0:
        raise ModelDirError(f"{path}: not an eventlm checkpoint (an empty file)")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message is several paragraphs with terminal colour codes: the gist, in one line
        found = re.search(r"(Unsupported global|Unsupported operand)[^\n]*", str(err))
        reason = found.group(0).split(". ")[0] if found else "it holds more than tensors and plain data"
        raise ModelDirError(f"{path}: not an eventlm checkpoint (a pickle payload: refused to unpickle, nothing run: "
                            f"{reason})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, AttributeError,
            TypeError, IndexError) as err:
        raise ModelDirError(f"{path}: not an eventlm checkpoint (unreadable: {type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict):
        raise ModelDirError(f"{path}: not an eventlm checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ModelDirError(f"{path}: not an eventlm checkpoint (no {', '.join(missing)})")
    from eventlm._version import __version__

    if ckpt.get("eventlm_version") != __version__:
        log.warning("%s was written by eventlm %s, this is %s", path, ckpt.get("eventlm_version"), __version__)
    return ckpt


def tokenizer_fingerprint(kind, params) -> str:
    """The fingerprint of a tokenizer from its kind and parameters (as :meth:`Tokenizer.fingerprint`),
    computed on their JSON form so a checkpoint's record and a ``tokenizer.json`` compare exactly."""
    normal = json.loads(json.dumps({"kind": kind, "params": params}, sort_keys=True))
    blob = json.dumps(normal, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ModelDir:
    """A model directory: reads, writes, checks and loads it, and opens its scorer (module docstring).

    Cheap to construct and to pickle (the cached checkpoints are dropped): a scorer sent to a worker
    process carries its ``ModelDir`` and reads the files there.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._checkpoints: dict[tuple, dict] = {}  # by (file name, size, mtime)
        self._fingerprints: dict[tuple, str] = {}
        self._split: dict | None = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r})"

    # ---- what it is ----------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """:data:`LANGUAGE_MODEL` or :data:`CLASSIFIER`; one-line errors for anything else."""
        if not self.path.exists():
            raise MissingModelFileError(f"{self.path}: no such model directory")
        if not self.path.is_dir():
            raise ModelDirError(f"{self.path}: not a model directory (a file, not a directory)")
        lm = (self.path / BEST).exists() or (self.path / LAST).exists()
        clf = (self.path / CLASSIFIER_INFO).exists() or (self.path / CLASSIFIER_WEIGHTS).exists()
        if lm and clf:
            raise ModelDirError(f"{self.path}: holds both a language model ({BEST}/{LAST}) and a classifier "
                                f"({CLASSIFIER_INFO}); a classifier belongs in a directory of its own")
        if clf:
            return CLASSIFIER
        if lm:
            return LANGUAGE_MODEL
        raise MissingModelFileError(f"{self.path} is not a model directory: no {BEST}, {LAST} or {CLASSIFIER_INFO}")

    # ---- files ---------------------------------------------------------------------------------
    def weights_path(self, which: str = "best") -> Path:
        """The weights file: ``classifier.pt`` for a classifier; for a language model ``best.pt``
        (falling back to ``checkpoint.pt``) for ``which="best"``, else ``checkpoint.pt``."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', not {which!r}")
        if (self.path / CLASSIFIER_WEIGHTS).exists() or (self.path / CLASSIFIER_INFO).exists():
            return self.path / CLASSIFIER_WEIGHTS
        best, last = self.path / BEST, self.path / LAST
        if which == "best" and best.exists():
            return best
        return last

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER

    def checkpoint(self, which: str = "best") -> dict:
        """The checkpoint dict of a language model, tensors on the CPU (read once, then cached)."""
        path = self.weights_path(which)
        key = _file_key(path)  # a file rewritten since (another train() into the directory) is read anew
        if key not in self._checkpoints:
            keys = CLASSIFIER_KEYS if path.name == CLASSIFIER_WEIGHTS else CHECKPOINT_KEYS
            self._checkpoints = {k: v for k, v in self._checkpoints.items() if k[0] != path.name}
            self._checkpoints[key] = read_checkpoint(path, map_location="cpu", keys=keys)
        return self._checkpoints[key]

    # ---- which rows it was trained on ----------------------------------------------------------
    def _split_payload(self) -> dict:
        if self._split is None:
            path = self.path / SPLIT
            if not path.exists():
                raise MissingModelFileError(f"{self.path} is not a model directory: no {SPLIT}")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or any(not isinstance(data.get(s), list) for s in SPLITS):
                    raise ValueError(f"no {', '.join(SPLITS)} lists")
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
                raise ModelDirError(f"{path}: not a split file ({one_line_reason(err)})") from None
            self._split = data
        return self._split

    def has_split(self) -> bool:
        return (self.path / SPLIT).exists()

    def split_sizes(self) -> dict[str, int]:
        """Rows per split as ``split.json`` records them."""
        payload = self._split_payload()
        return {s: len(payload[s]) for s in SPLITS}

    def in_split(self, events, split: str):
        """Boolean mask: which of ``events`` are rows of the model's ``split`` (train, validation, test).

        The one selection every caller uses (module docstring): by row keys, or, for a ``split.json``
        from before row keys, by event id where the ids of ``events`` are unique (refused otherwise).
        """
        import awkward as ak
        import numpy as np

        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        payload = self._split_payload()
        path = self.path / SPLIT
        if payload.get("rows") == ROW_KEYS:
            from eventlm.rows import row_keys

            try:
                recorded = np.asarray(payload[split], dtype=np.uint64)
            except (TypeError, ValueError, OverflowError) as err:
                raise ModelDirError(f"{path}: not a split file ({one_line_reason(err)})") from None
            return np.isin(row_keys(events), recorded)
        ids = ak.to_numpy(events.event_id).astype(np.int64)
        if "index" in payload or len(np.unique(ids)) != len(ids):
            raise ModelDirError(
                f"{path}: records event ids (written before row keys), and event ids repeat in "
                f"{'the training input' if 'index' in payload else 'these events'}, so its rows cannot be told "
                "apart; retrain the model (eventlm train) to record row keys"
            )
        log.warning("%s records event ids (written before row keys): selecting the %s rows by event id", path, split)
        return np.isin(ids, np.asarray(payload[split], dtype=np.int64))

    def select(self, events, split: str, *, complete: bool = False):
        """The rows of ``events`` in the model's ``split``, in input order. ``complete=True``: every
        row the split records must be among ``events`` (one-line :class:`ModelDirError` otherwise)."""
        mask = self.in_split(events, split)
        if complete:
            n_found, n_split = int(mask.sum()), self.split_sizes()[split]
            if n_found != n_split:
                raise ModelDirError(
                    f"{self.path}: {n_found} of the {n_split} {split} rows of this model are among the "
                    f"{len(events)} given events; pass the background it was trained on (same files, same "
                    "reader options)"
                )
        return events[mask]

    # ---- what is derived from the weights --------------------------------------------------------
    def weights_fingerprint(self, which: str = "best") -> str:
        """SHA-256 (first 16 hex digits) of the weights file's bytes."""
        path = self.weights_path(which)
        if not path.exists():
            raise MissingModelFileError(f"{self.path} is not a model directory: no {path.name}")
        key = _file_key(path)
        if key not in self._fingerprints:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            self._fingerprints[key] = digest.hexdigest()[:16]
        return self._fingerprints[key]

    def stamp(self, which: str = "best") -> dict:
        """What a derived file records of the weights it was made from: ``{"file", "sha256"}``."""
        return {"file": self.weights_path(which).name, "sha256": self.weights_fingerprint(which)}

    def check_stamp(self, path, stamp, which: str = "best") -> None:
        """Refuse (:class:`StaleFileError`, one line) the derived file ``path`` unless its ``stamp``
        names the weights ``which`` of this directory."""
        mine = self.stamp(which)
        if not isinstance(stamp, dict) or "sha256" not in stamp:
            raise StaleFileError(f"{path}: records no weights fingerprint (made before eventlm stamped derived "
                                 f"files), so it cannot be tied to {mine['file']}; make it again")
        if stamp["sha256"] != mine["sha256"]:
            raise StaleFileError(
                f"{path}: made from other weights ({stamp.get('file', '?')} {stamp['sha256']}, this directory's "
                f"{mine['file']} is {mine['sha256']}); make it again for these weights"
            )

    def calibration_path(self, which: str = "best") -> Path:
        return self.path / CALIBRATION[which]

    def write_calibration(self, calibration, which: str = "best") -> Path:
        """``calibration.json`` (``calibration_last.json`` for ``which="last"``), stamped."""
        return write_json(self.calibration_path(which), {**calibration.to_dict(), "weights": self.stamp(which)})

    def read_calibration(self, which: str = "best"):
        """The :class:`eventlm.calibration.ScoreCalibration` of the weights ``which``, or None if the
        directory has none; refuses one made from other weights or holding a non-finite number."""
        from eventlm.calibration import ScoreCalibration

        path = self.calibration_path(which)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
            self.check_stamp(path, data.get("weights") if isinstance(data, dict) else None, which)
            return ScoreCalibration.from_dict(data)
        except StaleFileError:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelDirError(f"{path}: not a calibration file ({one_line_reason(err)})") from None

    # ---- writing (train.py and finetune.py write every file through these) ----------------------
    def write_checkpoint(self, state: dict, which: str = "last") -> Path:
        """Write ``state`` as ``checkpoint.pt`` (``which="last"``) or ``best.pt``, atomically (a
        temporary file renamed into place: a crash never leaves half a checkpoint)."""
        path = self.path / (LAST if which == "last" else BEST)
        save_torch(state, path)
        return path

    def write_tokenizer(self, tokenizer) -> Path:
        """Save ``tokenizer`` as ``tokenizer.json`` (plus its weights) in the directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        return tokenizer.save(self.tokenizer_path)

    def write_config(self, config) -> Path:
        """The run config as ``config.toml`` (``eventlm train --config`` reads it back)."""
        from eventlm.config import save_config

        return save_config(config, self.path / CONFIG)

    def write_split(self, keys, positions: dict, *, seed: int, fractions: dict) -> Path:
        """``split.json``: the seed, fractions, row count and the row keys (:mod:`eventlm.rows`) of
        every split (``positions``: split name -> input positions)."""
        import numpy as np

        keys = np.asarray(keys, dtype=np.uint64)
        payload = {"rows": ROW_KEYS, "seed": seed, "fractions": fractions, "n_events": len(keys),
                   **{s: keys[positions[s]].tolist() for s in SPLITS}}
        self._split = None
        return write_json(self.path / SPLIT, payload)

    def write_metrics(self, metrics: dict) -> Path:
        return write_json(self.path / METRICS, metrics)

    def write_classifier(self, state: dict, info: dict, tokenizer) -> Path:
        """A classifier directory: ``tokenizer.json``, ``classifier.pt`` (``state``) and, last (it marks
        the directory complete), ``classifier.json`` (``info``). Refused in a language model's directory."""

        if self.path.exists() and ((self.path / BEST).exists() or (self.path / LAST).exists()):
            raise ModelDirError(f"{self.path}: holds a language model; write the classifier to a directory of "
                                "its own (--out)")
        self.path.mkdir(parents=True, exist_ok=True)
        tokenizer.save(self.tokenizer_path)
        save_torch(state, self.path / CLASSIFIER_WEIGHTS)
        return write_json(self.path / CLASSIFIER_INFO, info)

    def classifier_info(self) -> dict:
        """``classifier.json`` of a classifier directory."""
        path = self.path / CLASSIFIER_INFO
        if not path.exists():
            raise MissingModelFileError(f"{self.path} is not a complete classifier directory: no {CLASSIFIER_INFO}")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointMismatchError(f"{path}: not a classifier file ({one_line_reason(err)})") from None
        if not isinstance(info, dict) or info.get("kind") != "eventlm-classifier":
            kind = info.get("kind") if isinstance(info, dict) else None
            raise CheckpointMismatchError(f"{path}: kind {kind!r}, expected 'eventlm-classifier'")
        return info

    # ---- checks --------------------------------------------------------------------------------
    def check(self, device="cpu", which: str = "best", *, calibration: bool = True) -> ModelDir:
        """Check the whole directory now (see the module docstring); returns self. ``calibration=False``
        leaves the calibration out (it is about to be fitted anew)."""
        kind = self.kind
        if not self.tokenizer_path.exists():
            raise MissingModelFileError(f"{self.path} is not a model directory: no {TOKENIZER}")
        check_device(device)
        if kind == CLASSIFIER:
            self.classifier_info()
            if not (self.path / CLASSIFIER_WEIGHTS).exists():
                raise MissingModelFileError(f"{self.path} is not a complete classifier directory: "
                                            f"no {CLASSIFIER_WEIGHTS}")
        ckpt = self.checkpoint(which)
        self._check_tokenizer_file(ckpt)
        if kind == LANGUAGE_MODEL:
            self._check_same_run(ckpt, which)
        if kind == LANGUAGE_MODEL and calibration:
            self.read_calibration(which)
        return self

    def _check_same_run(self, ckpt: dict, which: str) -> None:
        """The weights belong to the run ``config.toml`` records: a ``best.pt`` copied in from another
        model (another architecture or seed, same tokenizer) is refused, not scored with."""
        path = self.path / CONFIG
        if not path.exists():
            return
        from eventlm.config import load_config

        try:
            config = load_config(path)
        except (OSError, ValueError) as err:
            raise ModelDirError(f"{path}: not a run config ({one_line_reason(err)})") from None
        run = ckpt.get("run_config") if isinstance(ckpt.get("run_config"), dict) else {}
        mine = {"seed": config.seed, **{f"[model] {k}": v for k, v in dataclasses.asdict(config.model).items()}}
        theirs = {"seed": run.get("seed"), **{f"[model] {k}": v for k, v in (run.get("model") or {}).items()}}
        differ = [k for k in mine if k in theirs and theirs[k] != mine[k]]
        if differ:
            k = differ[0]
            raise CheckpointMismatchError(
                f"{self.weights_path(which)}: weights of another model ({k} = {theirs[k]!r}, {CONFIG} says "
                f"{mine[k]!r}{f' and {len(differ) - 1} more' if len(differ) > 1 else ''})")

    def _check_tokenizer_file(self, ckpt: dict) -> dict:
        """The ``tokenizer.json`` payload, checked against the checkpoint's record of its tokenizer."""
        path = self.tokenizer_path
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointMismatchError(f"{path}: not a tokenizer file ({err})") from None
        except IsADirectoryError:
            raise ModelDirError(f"{path}: is a directory, not a tokenizer file") from None
        if not isinstance(payload, dict) or "kind" not in payload or "params" not in payload:
            raise CheckpointMismatchError(f"{path}: not a tokenizer file (no kind and params)")
        weights = self.weights_path()
        mine = tokenizer_fingerprint(payload["kind"], payload["params"])
        record = ckpt.get("tokenizer")
        if isinstance(record, dict) and "kind" in record and "params" in record:
            theirs = tokenizer_fingerprint(record["kind"], record["params"])
        elif "tokenizer_fingerprint" in ckpt:  # a classifier records the fingerprint alone
            theirs = ckpt["tokenizer_fingerprint"]
        else:
            log.warning("%s records no tokenizer: %s cannot be checked against it", weights, path)
            return payload
        if mine != theirs:
            raise CheckpointMismatchError(
                f"{path}: not the tokenizer {weights.name} was trained with (fingerprint {mine}, the "
                f"checkpoint records {theirs}): another run's tokenizer.json? copy the run's own"
            )
        return payload

    # ---- loading -------------------------------------------------------------------------------
    def load_tokenizer(self, device="cpu", which: str = "best"):
        """The tokenizer, checked against the checkpoint, built on ``device`` (learned tokenizers)."""
        from eventlm.tokenize.base import REGISTRY, import_tokenizer_module, load_tokenizer

        payload = self._check_tokenizer_file(self.checkpoint(which))
        params = payload["params"]
        if isinstance(params, dict) and "device" in params and params["device"] != str(device):
            # a learned tokenizer trained on another device: build it where it is used (weights are
            # read with map_location="cpu" and moved); its fingerprint was checked on the file above
            import_tokenizer_module(payload["kind"])
            if payload["kind"] in REGISTRY:
                try:
                    return REGISTRY[payload["kind"]].from_params({**params, "device": str(device)},
                                                                 directory=self.tokenizer_path.parent)
                except (KeyError, TypeError) as err:
                    raise CheckpointMismatchError(
                        f"{self.tokenizer_path}: malformed {payload['kind']!r} tokenizer parameters ({err!r})"
                    ) from None
        return load_tokenizer(self.tokenizer_path)

    def _transformer(self, config: dict, state: dict, path: Path):
        from eventlm.model import EventTransformer, ModelConfig

        try:
            model_config = ModelConfig(**config)
        except TypeError as err:
            raise ModelDirError(f"{path}: model_config does not fit this eventlm ({err})") from None
        return EventTransformer(model_config)

    def load(self, which: str = "best", device="cpu"):
        """``(model in eval mode on device, tokenizer, checkpoint dict)`` of a language model."""
        self.check(device=device, which=which, calibration=False)
        if self.kind != LANGUAGE_MODEL:
            raise ModelDirError(f"{self.path}: a fine-tuned classifier, not a language model (eventlm train)")
        ckpt = self.checkpoint(which)
        path = self.weights_path(which)
        tokenizer = self.load_tokenizer(device=device, which=which)
        model = self._transformer(ckpt["model_config"], ckpt["model"], path)
        if tokenizer.vocab_size != model.config.vocab_size:
            raise CheckpointMismatchError(
                f"{self.path}: tokenizer.json has a vocabulary of {tokenizer.vocab_size}, "
                f"the model {model.config.vocab_size}"
            )
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ModelDirError(f"{path}: the weights do not fit the model config ({one_line_reason(err)})") from None
        return model.to(device).eval(), tokenizer, ckpt

    def load_classifier(self, device="cpu"):
        """``(classifier in eval mode on device, tokenizer, classifier.json)`` of a classifier."""
        from eventlm.classifier import EventClassifier

        self.check(device=device)
        if self.kind != CLASSIFIER:
            raise ModelDirError(f"{self.path}: a language model, not a classifier (eventlm finetune)")
        info = self.classifier_info()
        payload = self.checkpoint()
        path = self.weights_path()
        tokenizer = self.load_tokenizer(device=device)
        backbone = self._transformer(payload["model_config"], payload["state_dict"], path)
        classifier = EventClassifier(backbone, payload["objective"])
        try:
            classifier.load_state_dict(payload["state_dict"])
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ModelDirError(f"{path}: the weights do not fit the model config ({one_line_reason(err)})") from None
        return classifier.to(device).eval(), tokenizer, info

    def open_scorer(self, device="cpu", *, which: str = "best", batch_events: int | None = None,
                    threads: int | None = None, calibrated: bool = True):
        """The scorer of this directory, checked whole now, its weights loaded on first use (lazy and
        picklable): :class:`eventlm.score.Scorer` for a language model (the score columns),
        :class:`eventlm.classifier.ClassifierScorer` for a classifier (one column ``score_<name>``).
        Every scoring path (CLI, workers, coffea, ``EventlmScorer``) opens its scorer here.
        ``calibrated=False``: no ``anomaly_score_calibrated`` (what :func:`eventlm.apply.calibrate` fits)."""
        self.check(device=device, which=which, calibration=calibrated)
        if self.kind == CLASSIFIER:
            from eventlm.classifier import ClassifierScorer

            if which != "best":
                raise ModelDirError(f"{self.path}: a classifier has one set of weights (which='best'), not {which!r}")
            return ClassifierScorer(self, device, batch_events=batch_events, threads=threads)
        from eventlm.score import Scorer

        return Scorer(self, device, which=which, batch_events=batch_events, threads=threads, calibrated=calibrated)


def _file_key(path: Path) -> tuple:
    """What tells a file apart from its earlier versions: name, size and modification time (ns)."""
    if not path.exists():
        raise MissingModelFileError(f"{path.parent} is not a model directory: no {path.name}")
    stat = path.stat()
    return (path.name, stat.st_size, stat.st_mtime_ns)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a calibration may hold")


def one_line_reason(err) -> str:
    text = " ".join(str(err).split())
    return text[:200] + ("..." if len(text) > 200 else "")
