"""What the README's "Logging" section says: every recipe logs with a CSVLogger; the TensorBoard and W&B loggers
come from optional extras (not the test extra); switching the logger on the command line keeps its save_dir
and name; without its package the run stops before training with an error naming the package; with W&B,
``--ckpt_path last`` asks for the checkpoint file."""
import glob
import importlib.util
import os
import re
import sys

import pytest
import yaml

from lightning_temporal.cli import run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.yaml")
TB = "lightning.pytorch.loggers.TensorBoardLogger"
WANDB = "lightning.pytorch.loggers.WandbLogger"


def _readme_logging_section() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index("## Logging")
    return text[start:text.index("\n## ", start + 1)]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml"))),
                         ids=lambda p: os.path.basename(p))
def test_every_recipe_logs_with_a_csv_logger(path):
    with open(path) as f:
        logger = yaml.safe_load(f)["trainer"]["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.CSVLogger"
    name = os.path.splitext(os.path.basename(path))[0]
    assert logger["init_args"] == {"save_dir": f"outputs/{name}", "name": "logs"}  # outputs/<recipe>/logs/version_N


def test_the_loggers_extras_exist_and_stay_out_of_the_test_extra():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert [re.split(r"[<>=]", r)[0] for r in extras["tensorboard"]] == ["tensorboard"]
    assert [re.split(r"[<>=]", r)[0] for r in extras["wandb"]] == ["wandb"]
    assert not [r for r in extras["test"] if r.startswith(("tensorboard", "wandb"))]
    section = _readme_logging_section()
    assert 'pip install -e ".[tensorboard]"' in section and 'pip install -e ".[wandb]"' in section


def test_switching_the_logger_keeps_save_dir_and_name(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    with pytest.raises(SystemExit) as done:
        run(["fit", "--config", QUICKSTART, f"--trainer.logger={TB}", "--print_config"])
    assert done.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    logger = config["trainer"]["logger"]
    assert logger["class_path"] == TB
    assert (logger["init_args"]["save_dir"], logger["init_args"]["name"]) == ("outputs/quickstart", "logs")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None
                    or importlib.util.find_spec("tensorboardX") is not None, reason="tensorboard is installed")
def test_tensorboard_without_its_package_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    with pytest.raises(ValueError, match="pip install"):
        run(["fit", "--config", QUICKSTART, f"--trainer.logger={TB}"])
    assert not os.path.exists(tmp_path / "data_cache") and not os.path.exists(tmp_path / "outputs")  # nothing ran


def test_wandb_runs_need_the_checkpoint_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    with pytest.raises(ValueError, match="give --ckpt_path the checkpoint file"):
        run(["test", "--config", QUICKSTART, f"--trainer.logger={WANDB}", "--ckpt_path", "last"])
