"""The run configuration: frozen dataclasses, read from and written to one small TOML file.

A ``config.toml`` has one table per section; every key is optional (defaults below)::

    seed = 1234
    device = "cpu"

    [tokenizer]
    kind = "lut"
    params = {}          # passed to get_tokenizer(kind, **params)

    [model]
    n_layer = 2
    n_embd = 64
    ...

    [train]
    objective = "causal"
    epochs = 8
    ...

    [masking]
    mode = "one"

    [split]
    train = 0.7
    validation = 0.1
    test = 0.2

Reading uses :mod:`tomllib` (``tomli`` before Python 3.11); writing is done here (the subset of TOML
these dataclasses need: strings, numbers, booleans, lists and tables).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


MASKING_MODES = ("one", "k", "fraction")


@dataclass(frozen=True)
class MaskingConfig:
    """How many tokens of each event are hidden per step."""

    mode: str = "one"  # "one" | "k" | "fraction"
    k: int = 1  # mode "k": mask min(k, n_maskable) tokens
    fraction: float = 0.15  # mode "fraction": mask max(1, round(fraction * n_maskable)) tokens
    mask_met: bool = False  # whether the trailing MET tokens may be masked

    def __post_init__(self):
        if self.mode not in MASKING_MODES:
            raise ValueError(f"masking mode {self.mode!r}: choose from {MASKING_MODES}")
        if self.k < 1:
            raise ValueError(f"masking k must be >= 1, got {self.k}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"masking fraction must be in (0, 1], got {self.fraction}")


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str = "lut"  # lut | vqvae | graph
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """The model's size and options; ``vocab_size`` and ``causal`` come from the tokenizer and objective."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1
    position: str = "rotary"  # rotary | learned | none
    max_len: int = 64
    normformer: bool = False


@dataclass(frozen=True)
class TrainSpec:
    objective: str = "causal"  # causal (the default: one event likelihood) | masked (the paper's)
    epochs: int = 8
    batch_size: int = 256
    lr: float = 2e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    patience: int = 3  # early stopping: epochs without a better validation loss
    max_events: int = 0  # 0: all events
    bucket_batches: int = 32  # batches per length bucket of the sampler
    num_workers: int = 0
    threads: int = 1  # torch intra-op threads on CPU (0: torch's default); 1 is fastest for this small model
    #: the fused training step (the default): the head and its loss in cache-sized chunks without the
    #: (N, V) logits (eventlm.model.head_loss), the attention with its backward written out, torch's fused
    #: AdamW, heap padding; false: the plain torch ops (the reference, and the baseline of
    #: benchmarks/train_default.py). The same losses and gradients to float32 rounding (docs/model.md).
    fused: bool = True
    score_batch_events: int = 64  # events per forward pass when scoring (x their particle count copies)
    #: the event weights in the training loss: "none" (the default: every event counts once, whatever
    #: its weight), "abs" (|w|: stable, but a sample with negative weights is then learnt as the sum of
    #: its positive and negative parts) or "signed" (w as it is: the weighted likelihood of an NLO
    #: sample, whose negative events pull probability away; noisier). Weights are divided by their mean
    #: |w| over the training events; the validation loss stays unweighted (docs/model.md).
    event_weights: str = "none"


@dataclass(frozen=True)
class SplitSpec:
    train: float = 0.7
    validation: float = 0.1
    test: float = 0.2

    def __post_init__(self):
        fractions = (self.train, self.validation, self.test)
        if min(fractions) < 0 or self.train <= 0 or self.validation <= 0:
            raise ValueError(f"split fractions must be >= 0 with train, validation > 0: {fractions}")
        if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must sum to 1, got {sum(fractions)}")


@dataclass(frozen=True)
class RunConfig:
    seed: int = 1234
    device: str = "cpu"
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    split: SplitSpec = field(default_factory=SplitSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        data = dict(data)
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for name, value in data.items():
            if name not in sections:
                raise ValueError(f"unknown config key {name!r}; known: {sorted(sections)}")
            if isinstance(value, dict) and name in _SECTION_TYPES:
                kwargs[name] = _build(_SECTION_TYPES[name], value, name)
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **sections) -> RunConfig:
        """A copy with some fields changed; nested: ``replace(train={"epochs": 2})``."""
        kwargs = {}
        for name, value in sections.items():
            if isinstance(value, dict) and name in _SECTION_TYPES:
                kwargs[name] = dataclasses.replace(getattr(self, name), **value)
            else:
                kwargs[name] = value
        return dataclasses.replace(self, **kwargs)


_SECTION_TYPES = {
    "tokenizer": TokenizerSpec,
    "model": ModelSpec,
    "train": TrainSpec,
    "masking": MaskingConfig,
    "split": SplitSpec,
}


def _build(cls, values: dict, section: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in [{section}]; known: {sorted(known)}")
    return cls(**values)


def load_config(path) -> RunConfig:
    """Read a run config from TOML (missing keys take their defaults)."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: {err}") from None
    try:
        return RunConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def save_config(config: RunConfig, path) -> Path:
    """Write ``config`` as TOML (atomically; :func:`load_config` reads it back)."""
    from eventlm.atomic import write_text

    return write_text(path, dumps_toml(config.to_dict()))


def dumps_toml(data: dict) -> str:
    """TOML text of a dict of scalars, lists and (nested) tables. ``None`` values are left out."""
    lines: list[str] = []
    _emit_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(data: dict, prefix: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _emit_table(value, [*prefix, key], lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to TOML")
