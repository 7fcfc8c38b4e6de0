"""A checkpoint that cannot be read (a run killed or a disk full mid-write) is an error naming the file and what
to do, given directly or through ``--ckpt_path last`` / ``best``; ``last`` falls back to the newest readable one."""
import os
import warnings

import pytest
import torch

from lightning_temporal.cli import CheckpointError, ConfigError, check_checkpoint, main, resolve_checkpoint, run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.yaml")
RUN = "outputs/quickstart/logs/version_0/checkpoints"  # where the quickstart recipe's training run keeps them


def _ckpt(path, best=None, when=None, keep=None):
    """A checkpoint torch saves (``keep``: only that fraction of its bytes, as a killed write leaves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"ModelCheckpoint{'monitor': 'val/top1'}": {"monitor": "val/top1", "best_model_path": best or ""}}
    torch.save({"callbacks": state, "state_dict": {"w": torch.randn(64, 64)}}, path)
    if keep is not None:
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
    if when is not None:
        os.utime(path, (when, when))
    return str(path)


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_truncated_checkpoint_names_the_file_and_what_to_do(tmp_path, keep):
    bad = _ckpt(tmp_path / "epoch=3.ckpt", keep=keep)
    with pytest.raises(CheckpointError, match=rf"{bad}: the checkpoint cannot be read: .* give --ckpt_path an older "
                                              r"checkpoint"):
        check_checkpoint(bad)
    good = _ckpt(tmp_path / "epoch=2.ckpt")
    assert check_checkpoint(good) == good


def test_last_falls_back_to_the_newest_readable_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = {"default_root_dir": "r", "logger": False}
    older = _ckpt(tmp_path / "r/checkpoints/last.ckpt", when=1e9)
    newest = _ckpt(tmp_path / "r/checkpoints/last-v1.ckpt", when=2e9, keep=0.5)
    with pytest.warns(UserWarning,
                      match=r"last-v1\.ckpt cannot be read .*; using the newest readable one, .*last\.ckpt"):
        assert os.path.samefile(resolve_checkpoint("last", cfg), older)
    _ckpt(tmp_path / "r/checkpoints/last.ckpt", when=1e9, keep=0.3)
    with pytest.raises(CheckpointError, match=r"--ckpt_path last: no last\*\.ckpt .* can be read: .*last-v1\.ckpt "
                                              r"cannot be read .*last\.ckpt cannot be read"):
        resolve_checkpoint("last", cfg)
    assert newest


def test_best_reads_the_record_of_a_readable_checkpoint_and_checks_the_best(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = {"default_root_dir": "r", "logger": False}
    best = _ckpt(tmp_path / "r/checkpoints/epoch=3.ckpt", when=1e9)
    _ckpt(tmp_path / "r/checkpoints/last.ckpt", best=best, when=2e9)
    _ckpt(tmp_path / "r/checkpoints/epoch=5.ckpt", when=3e9, keep=0.5)  # the newest file is cut short
    assert os.path.samefile(resolve_checkpoint("best", cfg), best)
    _ckpt(tmp_path / "r/checkpoints/epoch=3.ckpt", when=1e9, keep=0.5)
    with pytest.raises(CheckpointError, match=r"--ckpt_path best: .*epoch=3\.ckpt, the best checkpoint the run "
                                              r"recorded, cannot be read"):
        resolve_checkpoint("best", cfg)


@pytest.mark.parametrize("how", ["file", "last", "best"])
def test_cli_names_the_unreadable_checkpoint(tmp_path, monkeypatch, capsys, how):
    """Through the command line: exit status 2 and one line naming the file, before any data is built."""
    monkeypatch.chdir(tmp_path)
    bad = _ckpt(tmp_path / RUN / "last.ckpt", best=str(tmp_path / RUN / "last.ckpt"), keep=0.5)
    arg = bad if how == "file" else how
    monkeypatch.setattr("sys.argv", ["lightning-temporal", "test", "--config", QUICKSTART, "--ckpt_path", arg])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "last.ckpt" in err and "cannot be read" in err and "OSError" not in err and "Errno" not in err
    assert not (tmp_path / "data_cache").exists()  # failed before generating or reading any data
