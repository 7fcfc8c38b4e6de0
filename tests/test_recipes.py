"""Every recipe parses and runs one fast_dev_run step on small stand-in data in the recipe's own format."""
import csv
import glob
import os
import shutil
import warnings

import numpy as np
import pytest
import yaml

from lightning_temporal.cli import run as main
from tests.videos import write_video

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "recipes", "*.yaml")))
NAMES = [os.path.basename(r)[:-5] for r in RECIPES]
FRAMES = 24


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four tiny H.264 videos (32x32, 24 frames) the stand-in datasets copy."""
    d = tmp_path_factory.mktemp("clips")
    return [write_video(str(d / f"v{i}.mp4"), num_frames=FRAMES + 4 * i, size=(32, 32), gop=8) for i in range(4)]


def _recipe(name):
    with open(os.path.join(os.path.dirname(__file__), "..", "recipes", f"{name}.yaml")) as f:
        return yaml.safe_load(f)


def _stand_in(root, clips, recipe):
    """Data in the recipe's manifest format with the recipe's number of classes; returns CLI overrides."""
    data = recipe["data"]["init_args"]
    fmt = data.get("manifest_format", "csv")
    k = recipe["model"]["init_args"]["num_classes"]
    classes = [f"class_{i:03d}" for i in range(k)]
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    over = [f"--data.init_args.classes={root / 'classes.txt'}"]
    labels = [classes[i % 2] for i in range(len(clips))]  # two classes present, all K known
    if fmt == "csv":
        rows = []
        for i, (src, label) in enumerate(zip(clips, labels)):
            shutil.copy(src, root / f"v{i}.mp4")
            n = FRAMES + 4 * i
            np.save(root / f"v{i}.npy", np.linspace(0, 4, n).astype(np.float32))
            rows.append([f"v{i}.mp4", label, n, 2, 10, f"v{i}.npy"])
        with open(root / "m.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "num_frames", "event_start", "event_end", "frame_scores"])
            w.writerows(rows)
        over += [f"--data.init_args.{s}_manifest={root / 'm.csv'}" for s in ("train", "val", "test")]
    elif fmt == "kinetics":
        with open(root / "k.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for i, (src, label) in enumerate(zip(clips, labels)):
                os.makedirs(root / "videos" / label, exist_ok=True)
                shutil.copy(src, root / "videos" / label / f"yt{i}_{0:06d}_{10:06d}.mp4")
                for split in ("train", "val", "test"):  # one CSV, each split reads its own rows
                    w.writerow([label, f"yt{i}", 0, 10, split])
        over += [f"--data.init_args.{s}_manifest={root / 'k.csv'}" for s in ("train", "val", "test")]
        over += [f"--data.init_args.data_root={root / 'videos'}"]
    else:  # ucf101 / hmdb51 official split files
        splits = root / "splits"
        splits.mkdir()
        for i, (src, label) in enumerate(zip(clips, labels)):
            os.makedirs(root / "videos" / label, exist_ok=True)
            shutil.copy(src, root / "videos" / label / f"v_{label}_{i}.avi")
        if fmt == "ucf101":
            (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
            (splits / "trainlist01.txt").write_text(
                "".join(f"{lab}/v_{lab}_{i}.avi {classes.index(lab) + 1}\n" for i, lab in enumerate(labels)))
            (splits / "testlist01.txt").write_text(
                "".join(f"{lab}/v_{lab}_{i}.avi\n" for i, lab in enumerate(labels)))
        else:
            for c in classes:
                lines = [f"v_{lab}_{i}.avi {1 if i < 2 else 2}\n" for i, lab in enumerate(labels) if lab == c]
                (splits / f"{c}_test_split1.txt").write_text("".join(lines))
        over += [f"--data.init_args.{s}_manifest={splits}" for s in ("train", "val", "test")]
        over += [f"--data.init_args.data_root={root / 'videos'}"]
    return over


def _stand_in_checkpoint(path, backbone):
    """A PyTorchVideo hub file ({"model_state": ...}) of ``backbone`` with random weights, made by pytorchvideo."""
    from tests.pytorchvideo_ref import import_pytorchvideo, randomise_, save_hub_checkpoint

    hub, _, _, _ = import_pytorchvideo()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_hub_checkpoint(randomise_(getattr(hub, backbone)(pretrained=False)), path)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_parses_and_runs_one_step(name, clips, tmp_path, monkeypatch):
    recipe = _recipe(name)
    header = open(RECIPES[NAMES.index(name)]).read().splitlines()[0]
    assert header.startswith("#"), "every recipe opens with a comment saying what it reproduces"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])  # the CLI reads only `args`
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    over = [] if name == "quickstart" else _stand_in(data_dir, clips, recipe)
    pretrained = (recipe["model"]["init_args"].get("backbone_kwargs") or {}).get("pretrained")
    if pretrained:  # the recipe's path, relative to the run folder, holds a stand-in of the published file
        _stand_in_checkpoint(tmp_path / pretrained, recipe["model"]["init_args"]["backbone"])
    if name == "quickstart":  # the embedded dataset, tiny
        over += ["--data.init_args.synthetic={root: synth, num_train: 4, num_val: 2, num_test: 2, size: 32, "
                 "min_frames: 24, max_frames: 32}"]
    clip_len = 16 if recipe["model"]["init_args"]["backbone"] == "slowfast_r50" else 8
    if recipe["model"]["init_args"]["backbone"] == "vgg3d":  # the recipe's 3D VGG-16 at 1/16 width: a CPU step
        kwargs = dict(recipe["model"]["init_args"]["backbone_kwargs"], width=0.0625, pool_size=1)
        over.append("--model.init_args.backbone_kwargs=" + yaml.safe_dump(kwargs, default_flow_style=True).strip())
    over += [f"--data.init_args.clip_len={clip_len}", "--data.init_args.crop_size=32",
             "--data.init_args.short_side=32", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
             "--data.init_args.eval_clip_stride=8", "--data.init_args.stride=1",
             "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
             f"--trainer.default_root_dir={tmp_path / 'out'}", "--trainer.enable_progress_bar=false"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["fit", "--config", RECIPES[NAMES.index(name)], *over])
    if pretrained:  # the checkpoint was read: its 400-class head made way for the recipe's classes
        assert [w for w in caught if "head.fc is re-initialised" in str(w.message)]
    assert cli.trainer.state.finished, f"{name}: fit did not finish"
    if recipe["model"]["init_args"]["backbone"] == "vgg3d":  # the seed's network, at the test's width
        assert type(cli.model.backbone).__name__ == "VGG3D" and cli.model.backbone.out_channels == 32
    assert cli.trainer.global_step == 1
    assert "val/top1" in cli.trainer.callback_metrics or "val/eer_acc" in cli.trainer.callback_metrics
