"""``PredictionWriter`` from Python: one CSV per run whose numbers are the model's own (recomputed here from
the clip logits), relevance-curve figures, an undecodable video reported in its row, and the same file from
a 2-process DDP run (under a hard timeout) as from one process."""
import csv
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from lightning import Trainer

from lightning_temporal import PredictionWriter, TemporalDataModule, VideoClassifier, softmax_temporal_pool
from tests.synth import read_rows, tiny_dataset

CROP = dict(crop_size=24, short_side=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
            classes=["down", "left", "right", "up"])
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return tiny_dataset(root, num_train=2, num_val=1, num_test=5)


def _with_broken_video(manifest, tmp_path, row=2):
    rows = list(csv.reader(open(manifest)))
    broken = str(tmp_path / "broken.mp4")
    with open(broken, "wb") as f:
        f.write(os.urandom(2000))
    rows[row + 1][0] = broken  # +1: the header
    path = os.path.join(os.path.dirname(manifest), "test_with_broken.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_predictions_file_holds_the_models_numbers_and_curves(synth, tmp_path, caplog):
    manifest = _with_broken_video(synth["test"], tmp_path)
    dm = TemporalDataModule(train_manifest=synth["train"], predict_manifest=manifest, clip_len=8, eval_batch_size=2,
                            eval_clip_stride=3, progress=False, **CROP)
    torch.manual_seed(0)
    model = VideoClassifier("simple3d", num_classes=4, gamma_p=2.0).eval()
    writer = PredictionWriter(out_dir=str(tmp_path / "out"), figures=True, max_figures=3)
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[writer])
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="broken.mp4"):
        trainer.predict(model, datamodule=dm, return_predictions=False)
    path = tmp_path / "out" / "predictions.csv"
    assert writer.path == str(path) and f"predictions of 5 videos written to {path}" in caplog.text
    rows = read_rows(path)
    records = dm.manifest("predict").records
    assert [int(r["video_idx"]) for r in rows] == list(range(5))
    assert rows[2]["error"] and "broken.mp4" in rows[2]["error"] and rows[2]["pred"] == ""
    classes = dm.class_names
    dataset = dm.datasets["predict"]
    for i, row in enumerate(rows):
        if i == 2:
            continue
        item = dataset[i]
        with torch.no_grad():  # the clip logits, one clip at a time, and the pooling written out
            span = item["clip_len"] * item["stride"]
            clips = [item["video"][:, t:t + span:item["stride"]] for t in item["starts"].tolist()]
            logits = torch.cat([model(c[None]) for c in clips])  # K, C
        pooled = softmax_temporal_pool(logits, 2.0)
        probs = pooled.softmax(-1).numpy()
        got = np.array([float(row[f"prob_{c}"]) for c in classes])
        np.testing.assert_allclose(got, probs, rtol=1e-4, atol=1e-6)
        pred = int(probs.argmax())
        assert row["pred"] == classes[pred] and row["label"] == classes[records[i].label]
        assert row["video"] == records[i].path
        assert [int(s) for s in row["clip_starts"].split()] == item["starts"].tolist()
        scores = logits[:, pred].numpy()
        np.testing.assert_allclose([float(s) for s in row["clip_scores"].split()], scores, rtol=1e-4, atol=1e-6)
        w = np.exp(2.0 * (scores - scores.max()))
        np.testing.assert_allclose([float(s) for s in row["clip_weights"].split()], w / w.sum(), rtol=1e-4,
                                   atol=1e-6)
    figures = sorted(os.listdir(tmp_path / "out" / "curves"))
    assert len(figures) == 3 and all(f.endswith(".png") and os.path.getsize(tmp_path / "out" / "curves" / f) > 5000
                                     for f in figures)


def test_relevance_curve_figure_reads_without_a_legend_key():
    from lightning_temporal.plots.relevance_curve import plot_relevance_curve

    fig = plot_relevance_curve([0, 4, 8, 12], [0.1, 2.0, 1.0, -0.5], weights=[0.1, 0.6, 0.25, 0.05], num_frames=24,
                               clip_len=8, class_name="left", event=(6, 14), title="v.mp4")
    top, bottom = fig.axes
    assert top.get_ylabel() == 'logit of "left"' and bottom.get_ylabel() == "pooling weight"
    assert bottom.get_ylim()[0] == 0.0
    (curve,) = [ln for ln in top.get_lines() if ln.get_gid() == "curve"]
    np.testing.assert_allclose(curve.get_xdata(), np.array([0, 4, 8, 12]) + 3.5)  # clip centres
    fig.canvas.draw()
    legend = top.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["clip logit", "event window"]
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert not any(box.overlaps(ax.get_window_extent(fig.canvas.get_renderer())) for ax in fig.axes)
    with pytest.raises(ValueError, match="clip starts 0..16"):
        plot_relevance_curve([0, 20], [0.0, 1.0], num_frames=24, clip_len=8)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from lightning import Trainer
    from lightning_temporal import PredictionWriter, TemporalDataModule, VideoClassifier

    def main(test, train, out, devices):
        dm = TemporalDataModule(train_manifest=train, predict_manifest=test, clip_len=8, eval_batch_size=1,
                                eval_clip_stride=3, progress=False, crop_size=24, short_side=32, mean=(0.5,) * 3,
                                std=(0.25,) * 3, classes=["down", "left", "right", "up"])
        torch.manual_seed(0)
        model = VideoClassifier("simple3d", num_classes=4)
        trainer = Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[PredictionWriter(out_dir=out)])
        trainer.predict(model, datamodule=dm, return_predictions=False)

    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
""")


def test_two_process_ddp_writes_the_single_process_file(synth, tmp_path):
    script = tmp_path / "predict.py"
    script.write_text(DDP_SCRIPT)
    namespace = {"__name__": "predict"}
    exec(DDP_SCRIPT, namespace)
    namespace["main"](synth["test"], synth["train"], str(tmp_path / "1"), 1)  # one process, here
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(script), synth["test"], synth["train"], str(tmp_path / "2"), "2"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_rows(tmp_path / "1" / "predictions.csv"), read_rows(tmp_path / "2" / "predictions.csv")
    assert len(two) == 5 and [r["video"] for r in two] == [r["video"] for r in one]
    for a, b in zip(one, two):
        for key in a:
            if key.startswith("prob_") or key.startswith("clip_"):
                np.testing.assert_allclose(np.array(b[key].split(), float), np.array(a[key].split(), float),
                                           rtol=1e-4, atol=1e-6)
            else:
                assert a[key] == b[key], key
    assert sorted(os.listdir(tmp_path / "2")) == ["predictions.csv"]  # the rank parts are merged and removed
