"""The model directory: one object that reads it, checks it whole, and loads it on any device.

::

    from eventlm.modeldir import ModelDir

    md = ModelDir("runs/lut").check(device="cpu")   # before any event is read
    model, tokenizer, ckpt = md.load(device="cpu")  # a GPU-trained model loads on CPU too

A directory written by ``eventlm train`` holds ``best.pt`` (weights of the best validation epoch),
``checkpoint.pt`` (the last epoch, with optimizer and RNG states), ``tokenizer.json`` (plus the
weights of a learned tokenizer) and ``config.toml``, ``split.json``, ``metrics.json``.

:meth:`ModelDir.check` refuses, with one line naming the file and the problem:

- a missing directory or file (:class:`eventlm.errors.MissingModelFileError`, a ``FileNotFoundError``);
- a checkpoint that is not one: random bytes, an empty file, a pickle of something else, or a pickle
  that would run code (every load is ``torch.load(weights_only=True)``: nothing is executed);
- a ``tokenizer.json`` that is not the one the checkpoint was trained with: the checkpoint records
  the tokenizer's kind and parameters (bins, learned-weights digest), and their fingerprint must
  match the file's, so another run's tokenizer with the same vocabulary size is refused;
- a device torch cannot use here (``cuda:7`` on a machine with one GPU, ``banana``).

Tensors are always read onto the CPU first (``map_location="cpu"``) and then moved to the device,
so a directory trained on a GPU loads on a machine without one; a learned tokenizer is built on the
device it is loaded for, whatever device it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import warnings
import zipfile
from pathlib import Path

from eventlm.atomic import save_torch, write_json
from eventlm.errors import CheckpointMismatchError, MissingModelFileError, ModelDirError

log = logging.getLogger(__name__)

BEST = "best.pt"
LAST = "checkpoint.pt"
TOKENIZER = "tokenizer.json"
CONFIG = "config.toml"
SPLIT = "split.json"
METRICS = "metrics.json"
#: The three parts of the background a model directory records (``split.json``).
SPLITS = ("train", "validation", "test")
#: Keys every eventlm checkpoint holds.
CHECKPOINT_KEYS = ("model", "model_config", "run_config", "objective")

__all__ = ["SPLITS", "ModelDir", "check_device", "load_split", "read_checkpoint", "tokenizer_fingerprint"]


def load_split(model_dir) -> dict:
    """Event ids of the train / validation / test background of a model directory (``split.json``)."""
    return ModelDir(model_dir).split()


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


def read_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint file as a dict (``torch.load(weights_only=True)``), or one-line errors."""
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
        reason = str(err).splitlines()[0] if str(err) else "not a pickle"
        raise ModelDirError(f"{path}: not an eventlm checkpoint (refused to unpickle: {reason})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, AttributeError,
            TypeError, IndexError) as err:
        raise ModelDirError(f"{path}: not an eventlm checkpoint (unreadable: {type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict):
        raise ModelDirError(f"{path}: not an eventlm checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
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
    """A model directory written by ``eventlm train``; reads, checks and loads it (module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self._checkpoints: dict[str, dict] = {}

    # ---- files ---------------------------------------------------------------------------------
    def weights_path(self, which: str = "best") -> Path:
        """``best.pt`` (falling back to ``checkpoint.pt``) for ``which="best"``, else ``checkpoint.pt``."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', not {which!r}")
        best, last = self.path / BEST, self.path / LAST
        if which == "best" and best.exists():
            return best
        return last

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER

    def split(self) -> dict:
        """``{"train", "validation", "test"}`` -> the background event ids of each (int64 arrays)."""
        import numpy as np

        path = self.path / SPLIT
        if not path.exists():
            raise MissingModelFileError(f"{self.path} is not a model directory: no {SPLIT}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {name: np.asarray(data[name], dtype=np.int64) for name in SPLITS}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise ModelDirError(f"{path}: not a split file ({one_line_reason(err)})") from None

    def checkpoint(self, which: str = "best") -> dict:
        """The checkpoint dict, tensors on the CPU (read once, then cached)."""
        path = self.weights_path(which)
        key = path.name
        if key not in self._checkpoints:
            self._checkpoints[key] = read_checkpoint(path, map_location="cpu")
        return self._checkpoints[key]

    # ---- writing (train.py writes every file through these) ------------------------------------
    def write_checkpoint(self, state: dict, which: str = "last") -> Path:
        """Write ``state`` as ``checkpoint.pt`` (``which="last"``) or ``best.pt``, atomically (a
        temporary file renamed into place: a crash never leaves half a checkpoint)."""
        path = self.path / (LAST if which == "last" else BEST)
        save_torch(state, path)
        self._checkpoints.pop(path.name, None)
        return path

    def write_tokenizer(self, tokenizer) -> Path:
        """Save ``tokenizer`` as ``tokenizer.json`` (plus its weights) in the directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        return tokenizer.save(self.tokenizer_path)

    def write_config(self, config) -> Path:
        """The run config as ``config.toml`` (``eventlm train --config`` reads it back)."""
        from eventlm.config import save_config

        return save_config(config, self.path / CONFIG)

    def write_split(self, event_ids, positions: dict, *, seed: int, fractions: dict) -> Path:
        """``split.json``: the seed, fractions, event count and the event ids of every split
        (``positions``: split name -> input positions). Where the ids are not unique the input
        positions are recorded too."""
        import numpy as np

        payload = {"seed": seed, "fractions": fractions, "n_events": len(event_ids),
                   **{s: np.asarray(event_ids)[positions[s]].tolist() for s in SPLITS}}
        if len(np.unique(event_ids)) != len(event_ids):
            log.warning("event ids are not unique: split.json also records input positions")
            payload["index"] = {s: np.asarray(positions[s]).tolist() for s in SPLITS}
        return write_json(self.path / SPLIT, payload)

    def write_metrics(self, metrics: dict) -> Path:
        return write_json(self.path / METRICS, metrics)

    # ---- checks --------------------------------------------------------------------------------
    def check(self, device="cpu", which: str = "best") -> ModelDir:
        """Check the whole directory now (see the module docstring); returns self."""
        if not self.path.exists():
            raise MissingModelFileError(f"{self.path}: no such model directory")
        if not self.path.is_dir():
            raise ModelDirError(f"{self.path}: not a model directory (a file, not a directory)")
        if not self.tokenizer_path.exists():
            raise MissingModelFileError(f"{self.path} is not a model directory: no {TOKENIZER}")
        if not (self.path / BEST).exists() and not (self.path / LAST).exists():
            raise MissingModelFileError(f"{self.path} is not a model directory: no {BEST} or {LAST}")
        check_device(device)
        ckpt = self.checkpoint(which)
        self._check_tokenizer_file(ckpt)
        return self

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
        record = ckpt.get("tokenizer")
        weights = self.weights_path()
        if isinstance(record, dict) and "kind" in record and "params" in record:
            mine = tokenizer_fingerprint(payload["kind"], payload["params"])
            theirs = tokenizer_fingerprint(record["kind"], record["params"])
            if mine != theirs:
                raise CheckpointMismatchError(
                    f"{path}: not the tokenizer {weights.name} was trained with (fingerprint {mine}, the "
                    f"checkpoint records {theirs}): another run's tokenizer.json? copy the run's own"
                )
        else:
            log.warning("%s records no tokenizer: %s cannot be checked against it", weights, path)
        return payload

    # ---- loading -------------------------------------------------------------------------------
    def load_tokenizer(self, device="cpu", which: str = "best"):
        """The tokenizer, checked against the checkpoint, built on ``device`` (learned tokenizers)."""
        from eventlm.tokenize.base import REGISTRY, _import_all, load_tokenizer

        payload = self._check_tokenizer_file(self.checkpoint(which))
        params = payload["params"]
        if isinstance(params, dict) and "device" in params and params["device"] != str(device):
            # a learned tokenizer trained on another device: build it where it is used (weights are
            # read with map_location="cpu" and moved); its fingerprint was checked on the file above
            _import_all(payload["kind"])
            if payload["kind"] in REGISTRY:
                try:
                    return REGISTRY[payload["kind"]].from_params({**params, "device": str(device)},
                                                                 directory=self.tokenizer_path.parent)
                except (KeyError, TypeError) as err:
                    raise CheckpointMismatchError(
                        f"{self.tokenizer_path}: malformed {payload['kind']!r} tokenizer parameters ({err!r})"
                    ) from None
        return load_tokenizer(self.tokenizer_path)

    def load(self, which: str = "best", device="cpu"):
        """``(model in eval mode on device, tokenizer, checkpoint dict)``."""
        from eventlm.model import EventTransformer, ModelConfig

        self.check(device=device, which=which)
        ckpt = self.checkpoint(which)
        path = self.weights_path(which)
        tokenizer = self.load_tokenizer(device=device, which=which)
        try:
            model_config = ModelConfig(**ckpt["model_config"])
        except TypeError as err:
            raise ModelDirError(f"{path}: model_config does not fit this eventlm ({err})") from None
        if tokenizer.vocab_size != model_config.vocab_size:
            raise CheckpointMismatchError(
                f"{self.path}: tokenizer.json has a vocabulary of {tokenizer.vocab_size}, "
                f"the model {model_config.vocab_size}"
            )
        model = EventTransformer(model_config)
        try:
            model.load_state_dict(ckpt["model"])
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ModelDirError(f"{path}: the weights do not fit the model config ({one_line_reason(err)})") from None
        return model.to(device).eval(), tokenizer, ckpt


def one_line_reason(err) -> str:
    text = " ".join(str(err).split())
    return text[:200] + ("..." if len(text) > 200 else "")
