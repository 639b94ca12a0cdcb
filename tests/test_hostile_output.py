"""The output contract of every command that writes (issue 24): the output location is checked before
any work (a symlink loop, a path under a regular file, a missing directory, the wrong kind, a FIFO, a
read-only file system); a fault while writing (a full disk) is one line naming the output, exit status
2, and nothing is left under its final name: a model directory neither.

The full disk and the read-only directory are small tmpfs mounts made by the test (we run as root);
where the machine does not allow mounting they are skipped with the reason (a read-only directory
falls back to file modes for a user that is not root)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import one_error, random_events, study_toml

from eventlm.io import write_events

TOML = """seed = 5
[model]
n_embd = 16
n_head = 2
n_layer = 1
[train]
epochs = 1
batch_size = 64
warmup_steps = 2
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A causal tiny model (with its sampling table), inputs, a signal file, a run config and a study."""
    from conftest import scored_study, tiny_causal_model

    folder = tmp_path_factory.mktemp("contract")
    events = random_events(240, seed=21)
    model = tiny_causal_model(tmp_path_factory, events)
    inputs = write_events(events[:60], folder / "in.parquet")
    signal = write_events(random_events(60, seed=22, process="sig", start_id=10_000), folder / "sig.parquet")
    (folder / "run.toml").write_text(TOML)
    study = scored_study(folder, n_ttbar=60, n_wjets=20, n_signal=40)["paths"]
    (folder / "study.toml").write_text(study_toml(background=study["background"], signal=study["tttt_H500"]))
    return {"model": model, "inputs": inputs, "signal": signal, "config": folder / "run.toml",
            "study": folder / "study.toml"}


#: every command that writes: its command line with the output ``out``
COMMANDS = {
    "train": lambda s, out: ["train", str(s["inputs"]), "--out", out, "--config", str(s["config"]), "--no-progress"],
    "score": lambda s, out: ["score", str(s["inputs"]), "--model", str(s["model"]), "-o", out, "--no-progress"],
    "export": lambda s, out: ["export", str(s["model"]), "--onnx", out],
    "convert": lambda s, out: ["convert", str(s["inputs"]), out],
    "sample": lambda s, out: ["sample", str(s["model"]), "-n", "20", "-o", out, "--no-progress"],
    "finetune": lambda s, out: ["finetune", str(s["model"]), "--signal", str(s["signal"]), "--background",
                                str(s["inputs"]), "--out", out, "--epochs", "1", "--no-progress"],
    "tokens": lambda s, out: ["tokens", str(s["inputs"]), "--tokenizer", str(s["model"] / "tokenizer.json"),
                              "--out", out],
    "analyze": lambda s, out: ["analyze", str(s["study"]), "--out", out, "--no-progress", "--no-baselines"],
}
#: commands whose real work is too long for a test (Pythia, the whole demo): their output is checked
#: before any work all the same, which is what the read-only and bad-location tests see
PRECHECKED = {
    "generate": lambda s, out: ["generate", "ttbar", "--events", "10", "--out", out],
    "demo": lambda s, out: ["demo", "--quick", "--out", out],
}
#: the name of each command's output (the others write a directory)
FILES = {"score": "o.parquet", "export": "o.onnx", "convert": "o.root", "sample": "o.parquet",
         "generate": "o.csv.gz"}


def _argv(setup, command, folder: Path, name: str = "o"):
    if command in FILES:
        name += FILES[command][1:]
    return (COMMANDS | PRECHECKED)[command](setup, str(folder / name)), folder / name


def _umount(folder: Path) -> None:
    """Unmount; a mount still busy (a file left open by the command) fails the test, lazily unmounted."""
    busy = subprocess.run(["umount", str(folder)], capture_output=True, text=True)
    if busy.returncode:
        subprocess.run(["umount", "-l", str(folder)], check=True)
        raise AssertionError(f"{folder} still busy after the command: {busy.stderr.strip()}")


def _mount(folder: Path, options: str) -> None:
    folder.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                         text=True)
    if run.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({run.stderr.strip() or 'mount failed'}): needs root with "
                    "CAP_SYS_ADMIN")


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 64 KiB tmpfs filled to the last byte."""
    root = tmp_path / "mnt"
    _mount(root, "size=64k")
    try:
        (root / "out").mkdir()
        fd = os.open(root / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError, match="No space left"):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield root / "out"
    finally:
        _umount(root)


@pytest.fixture
def read_only(tmp_path):
    """A read-only folder: a tmpfs remounted read-only (root ignores file modes), else mode 0555."""
    root = tmp_path / "mnt"
    if os.geteuid() != 0:
        root.mkdir(mode=0o555)
        yield root
        root.chmod(0o755)
        return
    _mount(root, "size=64k")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        yield root
    finally:
        _umount(root)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_full_disk_is_one_line_naming_the_output_and_leaves_nothing(setup, full_disk, command, capsys):
    argv, out = _argv(setup, command, full_disk)
    one_error(capsys, argv, str(out), "No space left on device")
    assert os.listdir(full_disk) == []


@pytest.mark.parametrize("command", sorted(COMMANDS | PRECHECKED))
def test_read_only_directory_is_refused_before_any_work(setup, read_only, command, capsys):
    argv, out = _argv(setup, command, read_only)
    line = one_error(capsys, argv, str(out), "not writable")
    assert ".tmp-" not in line  # never a hidden temporary name
    assert os.listdir(read_only) == []


@pytest.mark.parametrize("command", sorted(COMMANDS | PRECHECKED))
def test_bad_output_locations_are_refused_before_any_work(setup, command, tmp_path, capsys):
    """A symlink loop, a path under a regular file, the wrong kind of file, a FIFO, a missing folder."""
    is_dir = command not in FILES
    (tmp_path / "file").write_text("x")
    argv, loop = _argv(setup, command, tmp_path, "loop")
    os.symlink(loop.name, loop)
    one_error(capsys, argv, str(loop), "symlink loop")
    argv, out = _argv(setup, command, tmp_path / "file")
    one_error(capsys, argv, str(out), "file is a file, not a directory")
    argv, wrong = _argv(setup, command, tmp_path, "wrong")
    wrong.write_text("a file") if is_dir else wrong.mkdir()
    one_error(capsys, argv, str(wrong), "exists and is not a directory" if is_dir else "output is a directory")
    argv, fifo = _argv(setup, command, tmp_path, "fifo")
    os.mkfifo(fifo)
    one_error(capsys, argv, str(fifo), "exists and is not a directory" if is_dir else "not a regular file (a FIFO")
    if not is_dir:  # a directory output is created, parents too; a file's folder is not
        argv, out = _argv(setup, command, tmp_path / "nowhere")
        one_error(capsys, argv, str(out), "nowhere does not exist")


def test_a_directory_created_by_a_failed_command_is_removed(tmp_path):
    """What a failed command created goes (parents too); what existed stays; Ctrl-C keeps a training
    that --resume can continue."""
    from eventlm.atomic import removed_on_error

    out = tmp_path / "a" / "m"
    with pytest.raises(RuntimeError), removed_on_error(out):
        out.mkdir(parents=True)
        (out / "config.toml").write_text("seed = 1\n")
        raise RuntimeError("late failure")
    assert not (tmp_path / "a").exists()
    keep = tmp_path / "kept"
    keep.mkdir()
    with pytest.raises(RuntimeError), removed_on_error(keep):
        raise RuntimeError("an existing directory is not removed")
    assert keep.is_dir()
    with pytest.raises(KeyboardInterrupt), removed_on_error(tmp_path / "r", keep_interrupted=lambda p: True):
        (tmp_path / "r").mkdir()
        raise KeyboardInterrupt
    assert (tmp_path / "r").is_dir()
