"""The user's loop through ``lightning-temporal``: fit, then test / predict on that training run, and the errors
a newcomer meets on the way.

One miniature quickstart (the recipe itself, on 6 tiny training videos, 10 epochs: validation and the best
checkpoint at epoch 9, so best = last) is trained once for the module; the other commands run on it.
"""
import csv
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from lightning_temporal.cli import ConfigError, main, resolve_checkpoint, run
from lightning_temporal.data.video_dataset import eval_clip_starts

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.yaml")
TINY = ["--data.init_args.synthetic={root: %s, num_train: 6, num_val: 2, num_test: 3, size: 32, min_frames: 24, "
        "max_frames: 32}", "--data.init_args.clip_len=8", "--data.init_args.crop_size=24",
        "--trainer.enable_progress_bar=false"]
# Lightning's own deprecation notices (its CLI on jsonargparse, its pytree helper on this torch): not ours to fix
THIRD_PARTY = ("treespec", "jsonargparse", "log_every_n_steps")


def _ours(caught):
    return [str(w.message) for w in caught if not any(t in str(w.message) for t in THIRD_PARTY)
            and "Jsonargparse" not in w.category.__name__]


def _cli(args, synth="synth"):
    """``lightning-temporal <args>`` on the miniature quickstart; ``synth``: folder of its generated videos."""
    return run([args[0], "--config", QUICKSTART, TINY[0] % synth, *TINY[1:], *args[1:]])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``lightning-temporal fit`` of the miniature quickstart in a fresh folder: (folder, cli, warnings)."""
    folder = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr("sys.argv", ["lightning-temporal"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cli = _cli(["fit", "--trainer.max_epochs=10"])
    return folder, cli, caught


@pytest.fixture
def in_run(trained, monkeypatch):
    monkeypatch.chdir(trained[0])
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    return trained


def _metrics(cli, prefix):
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(prefix)}


def test_fit_checkpoints_every_epoch_without_warnings(trained):
    folder, cli, caught = trained
    assert _ours(caught) == [], _ours(caught)  # no missing-monitor, mid-epoch or phase warning in a normal run
    ckpts = folder / "outputs" / "quickstart" / "logs" / "version_0" / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ["epoch=9-step=10.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 9  # written after the last training epoch
    state = {k: v for k, v in cli.model.state_dict().items()}
    assert all(torch.equal(last["state_dict"][k], v) for k, v in state.items())


def test_test_last_loads_the_trained_weights(in_run):
    folder, fit_cli, _ = in_run
    fit_test = _metrics(fit_cli, "test/")
    assert fit_test  # test_after_fit ran on the best checkpoint (= last here)
    cli = _cli(["test", "--ckpt_path", "last"])
    assert _metrics(cli, "test/") == pytest.approx(fit_test, abs=1e-6)
    # and not an untrained model's numbers; without a checkpoint the CLI says what it evaluates
    with pytest.warns(UserWarning, match="test without --ckpt_path runs the model as the config builds it"):
        untrained = _cli(["test"])
    assert _metrics(untrained, "test/")["test/loss"] != pytest.approx(fit_test["test/loss"], abs=1e-4)
    logs = folder / "outputs" / "quickstart" / "logs"
    # evaluations log inside the training run (or beside it, without a checkpoint); never a new version_N
    assert sorted(os.listdir(logs)) == ["test", "version_0"]
    assert (logs / "version_0" / "test" / "version_0" / "metrics.csv").is_file()


def test_predict_writes_one_row_per_video_with_its_curve(in_run, capsys):
    folder, fit_cli, _ = in_run
    cli = _cli(["predict", "--ckpt_path", "best"])
    best = fit_cli.trainer.checkpoint_callbacks[1].best_model_path
    assert os.path.samefile(cli.config["predict"]["ckpt_path"], best)
    from lightning_temporal import PredictionWriter

    (writer,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, PredictionWriter)]  # added by the CLI
    path = writer.path
    assert os.path.dirname(os.path.dirname(path)) == str(folder / "outputs" / "quickstart" / "logs" / "version_0"
                                                         / "predict") and path.endswith("predictions.csv")
    assert f"predictions: {path}" in capsys.readouterr().out  # the location is printed at the end
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    manifest = cli.datamodule.manifest("predict")
    assert [r["video"] for r in rows] == [rec.path for rec in manifest.records]
    classes = manifest.class_names
    for row, rec in zip(rows, manifest.records):
        assert row["label"] == classes[rec.label] and row["error"] == ""
        probs = np.array([float(row[f"prob_{c}"]) for c in classes])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4) and row["pred"] == classes[int(probs.argmax())]
        starts = [int(s) for s in row["clip_starts"].split()]
        assert starts == eval_clip_starts(rec.num_frames - 8 + 1, 8).tolist()  # the recipe's eval_clip_stride
        scores = np.array([float(s) for s in row["clip_scores"].split()])
        weights = np.array([float(w) for w in row["clip_weights"].split()])
        z = np.exp(1.0 * (scores - scores.max()))  # the recipe's gamma_p = 1
        np.testing.assert_allclose(weights, z / z.sum(), rtol=1e-4, atol=1e-6)
    assert "predict" not in os.listdir(folder / "outputs" / "quickstart" / "logs")


def test_predict_from_an_explicit_checkpoint_with_a_configured_writer(in_run):
    """The README's way to get figures: the config's own PredictionWriter is used (not a second one); a
    checkpoint given by path also logs inside its run."""
    from lightning_temporal import PredictionWriter

    run_dir = in_run[0] / "outputs" / "quickstart" / "logs" / "version_0"
    cli = _cli(["predict", "--ckpt_path", str(run_dir / "checkpoints" / "epoch=9-step=10.ckpt"),
                "--trainer.callbacks+=lightning_temporal.PredictionWriter", "--trainer.callbacks.figures=true"])
    (writer,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, PredictionWriter)]
    assert writer.figures and len(os.listdir(os.path.join(os.path.dirname(writer.path), "curves"))) == 3
    assert os.path.dirname(os.path.dirname(writer.path)) == str(run_dir / "predict")


def test_last_without_a_training_run_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    for which in ("last", "best"):
        with pytest.raises(ConfigError, match=rf"--ckpt_path {which}: no checkpoint of a training run of this config; "
                                              r"looked in outputs/quickstart/logs/version_\*/checkpoints"):
            _cli(["test", "--ckpt_path", which])
    assert not (tmp_path / "synth").exists(), "the error comes before any data is generated"


# ------------------------------------------------------------------------------------------ error messages
@pytest.mark.parametrize("args, first_line", [
    (["--model.init_args.gama_p=2"],
     "model.init_args.gama_p: VideoClassifier has no argument 'gama_p'; did you mean 'gamma_p'?"),
    (["--data.init_args.cliplen=3"],
     "data.init_args.cliplen: TemporalDataModule has no argument 'cliplen'; did you mean 'clip_len'?"),
    (["--trainer.max_epohcs=2"], "unknown option --trainer.max_epohcs; did you mean --trainer.max_epochs?"),
    (["--trainer.max_epochs=abc"], "trainer.max_epochs: 'abc' is not valid; expected int or NoneType"),
    (["--data.init_args.train_manifest=/nonexistent/train.csv"],
     "data.train_manifest='/nonexistent/train.csv': not found; give a manifest file"),
    (["--model.init_args.backbone_kwargs={pretrained: missing.pyth}"],
     "pretrained checkpoint 'missing.pyth' not found"),
])
def test_errors_lead_with_the_packages_own_line(args, first_line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal", "fit", "--config", QUICKSTART, *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"lightning-temporal: error: {first_line}"), err[:3]
    assert not any("Does not validate" in line or line.startswith("usage:") for line in err), err


@pytest.mark.parametrize("yaml_text, first_line", [
    ("trainer:\n  max_epohcs: 2\n",
     "unknown key 'trainer.max_epohcs' in the config; did you mean 'trainer.max_epochs'?"),
    ("modle:\n  init_args: {gamma_p: 1}\n",
     "unknown key 'modle.init_args.gamma_p' in the config; did you mean 'model'?"),
    ("trainer:\n  callbacks:\n    - class_path: lightning_temporal.StochasticSoftmaxCallback\n"
     "      init_args: {gama_s: 2}\n",
     "trainer.callbacks.init_args.gama_s: StochasticSoftmaxCallback has no argument 'gama_s'; did you mean 'gamma_s'?"),
])
def test_misspelled_config_file_keys_get_a_suggestion(yaml_text, first_line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    (tmp_path / "mine.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        run(["fit", "--config", QUICKSTART, "--config", "mine.yaml"])
    assert str(err.value).splitlines()[0] == first_line


def test_fit_last_resumes_the_newest_run_into_a_new_version(trained, tmp_path, monkeypatch):
    folder, fit_cli, _ = trained
    shutil.copytree(folder / "outputs", tmp_path / "outputs")  # a copy: the module's run stays as it is
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    cli = _cli(["fit", "--ckpt_path", "last", "--trainer.max_epochs=11", "--test_after_fit=false"],
               str(folder / "synth"))
    assert cli.trainer.global_step == fit_cli.trainer.global_step + 1  # one more epoch of one batch, not 11
    logs = tmp_path / "outputs" / "quickstart" / "logs"
    assert (logs / "version_1" / "checkpoints" / "last.ckpt").is_file()
    # the newest run is now version_1: last resolves there
    assert resolve_checkpoint("last", {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                  "init_args": {"save_dir": "outputs/quickstart", "name": "logs"}}}) \
        == os.path.join("outputs/quickstart", "logs", "version_1", "checkpoints", "last.ckpt")


def _ckpt(path, best=None, monitor="val/top1"):
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"ModelCheckpoint{'monitor': None}": {"monitor": None, "best_model_path": str(path)}}
    if monitor:
        state[f"ModelCheckpoint{{'monitor': '{monitor}'}}"] = {"monitor": monitor, "best_model_path": best or ""}
    torch.save({"callbacks": state}, path)
    return str(path)


def test_resolve_checkpoint_follows_lightnings_run_layouts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "out", "name": "x"}}
    # newest run with a checkpoint wins; a run folder without one (a crashed start) is skipped
    _ckpt(tmp_path / "out/x/version_2/checkpoints/last.ckpt")
    _ckpt(tmp_path / "out/x/version_10/checkpoints/last.ckpt")
    (tmp_path / "out/x/version_11").mkdir()
    assert resolve_checkpoint("last", {"logger": csv_logger}) == "out/x/version_10/checkpoints/last.ckpt"
    # best: what the monitoring ModelCheckpoint recorded, found in the run's folder if the run used another cwd
    best = _ckpt(tmp_path / "out/x/version_10/checkpoints/epoch=3.ckpt")
    os.utime(best, (1e9, 1e9))  # older than last.ckpt, which holds the newest record
    _ckpt(tmp_path / "out/x/version_10/checkpoints/last.ckpt",
          best="/elsewhere/out/x/version_10/checkpoints/epoch=3.ckpt")
    assert resolve_checkpoint("best", {"logger": csv_logger}) == "out/x/version_10/checkpoints/epoch=3.ckpt"
    # a fixed version, TensorBoard's layout
    tb = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
          "init_args": {"save_dir": "tb", "name": "", "version": "v7"}}
    _ckpt(tmp_path / "tb/v7/checkpoints/last-v1.ckpt")
    assert resolve_checkpoint("last", {"logger": tb}) == "tb/v7/checkpoints/last-v1.ckpt"
    # the default logger, no logger, an explicit dirpath
    _ckpt(tmp_path / "root/lightning_logs/version_0/checkpoints/last.ckpt")
    assert resolve_checkpoint("last", {"default_root_dir": "root"}).endswith("root/lightning_logs/version_0/"
                                                                              "checkpoints/last.ckpt")
    _ckpt(tmp_path / "bare/checkpoints/last.ckpt")
    assert resolve_checkpoint("last", {"default_root_dir": "bare", "logger": False}) == "bare/checkpoints/last.ckpt"
    _ckpt(tmp_path / "mine/last.ckpt")
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "mine"}}]
    assert resolve_checkpoint("last", {"callbacks": callbacks, "logger": False}) == "mine/last.ckpt"
    # what cannot be resolved says why
    _ckpt(tmp_path / "nolast/checkpoints/epoch=1.ckpt", monitor=None)
    with pytest.raises(ConfigError, match=r"has no last\*.ckpt, only epoch=1.ckpt"):
        resolve_checkpoint("last", {"default_root_dir": "nolast", "logger": False})
    with pytest.raises(ConfigError, match="recorded no best checkpoint"):
        resolve_checkpoint("best", {"default_root_dir": "nolast", "logger": False})
    with pytest.raises(ConfigError, match="cannot tell where the training runs of logger"):
        resolve_checkpoint("last", {"logger": {"class_path": "lightning.pytorch.loggers.WandbLogger"}})
