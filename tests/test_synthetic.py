"""Tests of the synthetic localized-event generator: every property is checked on *decoded* frames
(an independent sequential PyAV decode written here), not on the generator's own arrays."""
import csv
import filecmp
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from lightning_temporal.data.synthetic import class_names, ensure_dataset, generate_dataset

TINY = dict(size=32, min_frames=24, max_frames=48, progress=False)
OBJECT_THRESHOLD = 190  # object grey ≈ 230, background ≤ ≈ 140 + noise
# at size 32 the square has a 4-px side at sub-pixel positions: 3x3 to 4x4 pixels pass the threshold
SQUARE_AREA = (8, 17)


def read_rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def decode_grey(path):
    """Sequential decode of every frame: int32 [L, H, W] (channel 0 of rgb24; the content is grey)."""
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24")[..., 0] for f in container.decode(video=0)]).astype(np.int32)


def circular_centroid(mask):
    """(y, x) circular mean of the True pixels of a [S, S] mask on a torus of S pixels."""
    S = mask.shape[0]
    ys, xs = np.nonzero(mask)
    out = []
    for c in (ys, xs):
        ang = 2 * np.pi * (c + 0.5) / S
        out.append((np.angle(np.exp(1j * ang).mean()) % (2 * np.pi)) * S / (2 * np.pi) - 0.5)
    return np.array(out)


def wrap(d, S):
    return (d + S / 2) % S - S / 2


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """Multiclass dataset without distractors (so the one bright object can be tracked) — 8 per class."""
    root = str(tmp_path_factory.mktemp("multi"))
    paths = generate_dataset(root, num_train=32, num_val=5, num_test=3, num_distractors=(0, 0), num_workers=0, **TINY)
    return root, paths


@pytest.fixture(scope="module")
def default_pair(tmp_path_factory):
    """Two generations with the same seed (in-process and with a 2-process pool) and one with another seed."""
    roots = [str(tmp_path_factory.mktemp(n)) for n in ("a", "b", "c")]
    kw = dict(num_train=6, num_val=3, num_test=3, **TINY)
    generate_dataset(roots[0], seed=7, num_workers=0, **kw)
    generate_dataset(roots[1], seed=7, num_workers=2, **kw)
    generate_dataset(roots[2], seed=8, num_workers=0, **kw)
    return roots


def test_same_seed_same_manifests_and_frames(default_pair):
    a, b, c = default_pair
    for split in ("train", "val", "test"):
        assert filecmp.cmp(os.path.join(a, f"{split}.csv"), os.path.join(b, f"{split}.csv"), shallow=False)
        for row in read_rows(os.path.join(a, f"{split}.csv")):
            # byte-identical files, not only equal frames: the encoder must not depend on the process
            assert filecmp.cmp(os.path.join(a, row["path"]), os.path.join(b, row["path"]), shallow=False), row["path"]
            np.testing.assert_array_equal(decode_grey(os.path.join(a, row["path"])), decode_grey(os.path.join(b, row["path"])))
            np.testing.assert_array_equal(np.load(os.path.join(a, row["frame_scores"])), np.load(os.path.join(b, row["frame_scores"])))
    with open(os.path.join(a, "dataset.json")) as f:
        assert json.load(f)["params"]["seed"] == 7


def test_same_seed_same_bytes_in_fresh_processes(tmp_path):
    """x264 state that differs from process to process (the first encode of a process is where it showed,
    with mbtree on) must not reach the files: three fresh interpreters write byte-identical videos."""
    roots = [str(tmp_path / f"r{i}") for i in range(3)]
    for root in roots:
        subprocess.run(
            [sys.executable, "-m", "lightning_temporal.data.synthetic", root, "--num_train", "3", "--num_val", "0",
             "--num_test", "0", "--size", "32", "--min_frames", "24", "--max_frames", "48", "--num_workers", "0"],
            check=True, capture_output=True, timeout=300,
        )
    rows = read_rows(os.path.join(roots[0], "train.csv"))
    assert len(rows) == 3
    for row in rows:
        for other in roots[1:]:
            assert filecmp.cmp(os.path.join(roots[0], row["path"]), os.path.join(other, row["path"]), shallow=False), row


def test_grey_to_yuv420p_matches_ffmpeg_conversion():
    """The generator hands x264 yuv420p frames it converts itself; swscale's rgb24 -> yuv420p of the same grey
    image is the independent reference (within its one-level fixed-point rounding)."""
    from lightning_temporal.data.synthetic import _grey_to_yuv420p

    grey = np.repeat(np.arange(256, dtype=np.uint8)[None, :], 4, axis=0)  # every grey level, [4, 256]
    ref = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), format="rgb24").reformat(format="yuv420p")
    ref = ref.to_ndarray().astype(np.int32)
    ours = _grey_to_yuv420p(grey).astype(np.int32)
    assert ours.shape == ref.shape == (6, 256)
    assert np.abs(ours[:4] - ref[:4]).max() <= 1 and (ours[:4] != ref[:4]).mean() < 0.01
    assert ours[0, 0] == 16 and ours[0, 255] == 235  # limited range ends
    assert (ours[4:] == 128).all() and (ref[4:] == 128).all()


def test_other_seed_differs(default_pair):
    a, _, c = default_pair
    ra, rc = read_rows(os.path.join(a, "train.csv")), read_rows(os.path.join(c, "train.csv"))
    assert [r["num_frames"] for r in ra] != [r["num_frames"] for r in rc]
    fa, fc = decode_grey(os.path.join(a, ra[0]["path"])), decode_grey(os.path.join(c, rc[0]["path"]))
    assert fa.shape != fc.shape or np.abs(fa - fc).mean() > 5


def test_manifest_columns_and_frame_count_equals_sequential_decode(default_pair):
    root = default_pair[0]
    for split in ("train", "val", "test"):
        with open(os.path.join(root, f"{split}.csv")) as f:
            assert f.readline().strip() == "path,label,num_frames,event_start,event_end,frame_scores"
        for row in read_rows(os.path.join(root, f"{split}.csv")):
            frames = decode_grey(os.path.join(root, row["path"]))
            assert len(frames) == int(row["num_frames"]), row["path"]
            assert 24 <= len(frames) <= 48
            assert frames.shape[1:] == (32, 32)
            with av.open(os.path.join(root, row["path"])) as cont:
                stream = cont.streams.video[0]
                assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
                assert float(stream.average_rate) == 25.0


def test_event_windows_inside_videos_with_requested_fraction(multi):
    root, paths = multi
    for split, manifest in paths.items():
        for row in read_rows(manifest):
            L, s, e = int(row["num_frames"]), int(row["event_start"]), int(row["event_end"])
            assert 0 <= s < e <= L, row
            # window length = round(frac * L) with frac in [0.10, 0.20], at least 2 frames
            assert max(2, round(0.10 * L)) - 1 <= e - s <= round(0.20 * L) + 1, row


def test_frame_scores_zero_outside_window_and_peak_inside(multi):
    root, paths = multi
    for manifest in paths.values():
        for row in read_rows(manifest):
            scores = np.load(os.path.join(root, row["frame_scores"]))
            s, e = int(row["event_start"]), int(row["event_end"])
            assert scores.dtype == np.float32 and scores.shape == (int(row["num_frames"]),)
            assert np.all(scores[:s] == 0) and np.all(scores[e:] == 0)
            assert np.all(scores[s:e] > 0) and scores.max() == pytest.approx(1.0)
            # trapezoid: rises, plateau at 1, falls
            peak = int(np.argmax(scores))
            assert np.all(np.diff(scores[s : peak + 1]) >= 0) and np.all(np.diff(scores[peak:e]) <= 0)


@pytest.mark.parametrize("variant,counts", [("multiclass", (32, 5, 3)), ("binary", (7, 4, 3))])
def test_class_balance_per_split(multi, tmp_path, variant, counts):
    if variant == "multiclass":
        paths = multi[1]
    else:
        paths = generate_dataset(str(tmp_path), variant=variant, num_train=counts[0], num_val=counts[1],
                                 num_test=counts[2], num_workers=0, **TINY)
    names = class_names(variant)
    for split, n in zip(("train", "val", "test"), counts):
        labels = [r["label"] for r in read_rows(paths[split])]
        assert len(labels) == n
        per_class = [labels.count(c) for c in names]
        assert sum(per_class) == n, f"unknown labels in {labels}"
        assert max(per_class) - min(per_class) <= 1, (split, per_class)


def _track(frames):
    """Per-frame circular centroid of the bright object: [L, 2] (y, x)."""
    return np.stack([circular_centroid(f > OBJECT_THRESHOLD) for f in frames])


def test_class_is_in_the_motion_not_in_a_single_frame(multi):
    root, paths = multi
    S = 32
    unit = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
    mid_positions = {c: [] for c in unit}
    for row in read_rows(paths["train"]):
        frames = decode_grey(os.path.join(root, row["path"]))
        L, s, e = len(frames), int(row["event_start"]), int(row["event_end"])
        pos = _track(frames)
        step = wrap(np.diff(pos, axis=0), S)  # per-frame displacement, [L-1, 2]
        # displacement over the window: the motion has the class direction and the trapezoid speed profile
        # (peak event_speed * S/32 = 2 px/frame, ramps over the first and last quarter), summed here frame by frame
        a, b = max(s - 1, 0), min(e, L - 1)
        disp = step[a:b].sum(axis=0)
        along = disp @ np.array(unit[row["label"]])
        across = disp @ np.array(unit[row["label"]][::-1])
        w = e - s
        ramp = [min(1.0, min(k + 0.5, w - k - 0.5) / (w / 4.0)) for k in range(w)]
        expected = 2.0 * (S / 32) * sum(ramp) / max(ramp)
        assert abs(along - expected) <= 1.5, (row, disp, expected)
        assert abs(across) <= 1.5, (row, disp)
        assert 1.4 <= (step[a:b] @ np.array(unit[row["label"]])).max() <= 2.6, row  # peak speed ~ 2 px/frame
        # outside the window the object only jitters (well under a pixel per frame)
        outside = np.r_[step[: max(s - 1, 0)], step[e:]]
        if len(outside):
            assert np.abs(outside).max() <= 1.5, row
        # a frame inside the window shows the same square as at rest (no streak or trail encodes the direction)
        m = (s + e) // 2
        areas = (frames > OBJECT_THRESHOLD).sum(axis=(1, 2))
        assert SQUARE_AREA[0] <= areas[m] <= SQUARE_AREA[1] and SQUARE_AREA[0] <= np.median(areas) <= SQUARE_AREA[1]
        mid_positions[row["label"]].append(pos[m] @ np.abs(unit[row["label"]]))
    # the position along the motion axis at mid-event is spread over the frame for every class:
    # where the object is does not tell which way it moves
    for c, p in mid_positions.items():
        assert len(p) == 8
        # (8 draws per class: "spread" = they cover more than a quarter of the frame, not a fixed spot)
        assert max(p) - min(p) > S / 4, (c, p)


def test_binary_variant_labels_windows_and_distractors(tmp_path):
    paths = generate_dataset(str(tmp_path), variant="binary", num_train=8, num_val=0, num_test=0,
                             num_distractors=(1, 1), num_workers=0, **TINY)
    rows = read_rows(paths["train"])
    assert sorted({r["label"] for r in rows}) == ["event", "no_event"]
    for row in rows:
        scores = np.load(os.path.join(str(tmp_path), row["frame_scores"]))
        frames = decode_grey(os.path.join(str(tmp_path), row["path"]))
        assert len(frames) == int(row["num_frames"]) == len(scores)
        if row["label"] == "no_event":
            assert row["event_start"] == "" and row["event_end"] == ""
            assert not scores.any()
        else:
            s, e = int(row["event_start"]), int(row["event_end"])
            assert 0 <= s < e <= len(frames) and scores[s:e].min() > 0
        # two identical squares (object + distractor) in every video, and motion outside any window:
        # "something moves" alone does not reveal the event
        area = np.median((frames > OBJECT_THRESHOLD).sum(axis=(1, 2)))
        assert 2 * SQUARE_AREA[0] <= area <= 2 * SQUARE_AREA[1], (row, area)
        moved = np.abs(frames[-1] - frames[0]).max()
        assert moved > 100, row


def test_redundancy_variant_static_stretches(tmp_path):
    paths = generate_dataset(str(tmp_path), variant="redundancy", num_train=6, num_val=0, num_test=0,
                             num_workers=0, **TINY)
    with open(paths["train"]) as f:
        assert f.readline().strip() == "path,label,num_frames,event_start,event_end,frame_scores,static_fraction"
    rows = read_rows(paths["train"])
    for row in rows:
        frames = decode_grey(os.path.join(str(tmp_path), row["path"]))
        L, s, e = len(frames), int(row["event_start"]), int(row["event_end"])
        # a frozen frame decodes (near-)identical to its predecessor; dynamic frames get fresh noise
        # (mean absolute change: fresh noise of std 0.03 gives ~6 grey levels; a frozen frame right after fast
        # motion may keep a few pixels of codec drift, so the max over pixels is not a reliable test)
        change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
        static = np.r_[False, change <= 3]
        assert static.sum() / L == pytest.approx(float(row["static_fraction"]), abs=1e-4), row
        assert not static[s:e].any(), "the event window must stay dynamic"
        # stretches: runs of >= 4 consecutive static frames exist
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, static.astype(int), 0])))[::2]
        assert runs.max() >= 4, row
    assert np.mean([float(r["static_fraction"]) for r in rows]) > 0.2


def test_ensure_dataset_reuses_and_regenerates(tmp_path):
    root = str(tmp_path)
    kw = dict(num_train=4, num_val=2, num_test=2, num_workers=0, **TINY)
    paths = ensure_dataset(root, **kw)
    info = os.path.join(root, "dataset.json")
    video = os.path.join(root, read_rows(paths["train"])[0]["path"])
    stamps = (os.stat(info).st_mtime_ns, os.stat(video).st_mtime_ns, os.stat(paths["train"]).st_mtime_ns)
    assert ensure_dataset(root, **kw) == paths
    assert (os.stat(info).st_mtime_ns, os.stat(video).st_mtime_ns, os.stat(paths["train"]).st_mtime_ns) == stamps

    # a parameter change regenerates in place
    ensure_dataset(root, **{**kw, "seed": 1})
    with open(info) as f:
        assert json.load(f)["params"]["seed"] == 1
    assert os.stat(info).st_mtime_ns != stamps[0]

    # a damaged copy (missing video) regenerates too
    os.remove(video)
    ensure_dataset(root, **{**kw, "seed": 1})
    assert os.path.exists(video)


def test_existing_dataset_needs_overwrite(tmp_path):
    kw = dict(num_train=2, num_val=0, num_test=0, num_workers=0, **TINY)
    generate_dataset(str(tmp_path), **kw)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_dataset(str(tmp_path), **kw)
    generate_dataset(str(tmp_path), overwrite=True, **{**kw, "num_train": 1})
    assert len(read_rows(os.path.join(str(tmp_path), "train.csv"))) == 1
    assert sorted(os.listdir(os.path.join(str(tmp_path), "videos", "train"))) == ["train_00000.mp4"]


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(variant="ternary"), "variant"),
        (dict(size=33), "size"),
        (dict(num_classes=8), "num_classes"),
        (dict(event_fraction=(0.3, 0.2)), "event_fraction"),
        (dict(min_frames=10, event_fraction=(0.1, 0.2)), "min_frames"),
        (dict(num_distractors=(2, 1)), "num_distractors"),
        (dict(noise=-1.0), "noise"),
        (dict(event_speed=0.0), "event_speed"),
    ],
)
def test_bad_arguments_name_the_parameter(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(str(tmp_path), **{**TINY, "num_train": 1, **bad})
    assert not os.path.exists(os.path.join(str(tmp_path), "dataset.json"))


def test_worker_pool_from_unguarded_script(tmp_path):
    """A plain script without `if __name__ == "__main__"` can use the process pool (no __main__ re-import)."""
    import subprocess
    import sys

    script = tmp_path / "gen.py"
    script.write_text(
        "from lightning_temporal.data.synthetic import generate_dataset\n"
        f"generate_dataset({str(tmp_path / 'd')!r}, num_train=4, num_val=0, num_test=0, size=32, min_frames=24,"
        " max_frames=24, progress=False, num_workers=2)\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(read_rows(str(tmp_path / "d" / "train.csv"))) == 4


# ------------------------------------------------------------------------------------------------------------
# The appearance variant (for SGS): the class is the shape of a still object shown during the event
# ------------------------------------------------------------------------------------------------------------
APPEARANCE = dict(variant="appearance", size=32, min_frames=32, max_frames=32, event_fraction=(0.2, 0.3),
                  num_workers=0, progress=False)


def classify_shape(frame):
    """Shape of the one bright object in a grey frame [S, S], from its coverage: ring (empty centre), cross
    (empty at 20 % in from the bounding box's corners), square (filled corners), else disc. Written from the
    shapes' geometry, not from the generator's code."""
    S = frame.shape[0]
    f = frame.astype(np.float64)
    bg = np.median(f)
    cov = np.clip((f - bg) / (f.max() - bg), 0, 1)
    centre = circular_centroid(cov > 0.5)
    cov = np.roll(cov, (int(round(S / 2 - centre[0])), int(round(S / 2 - centre[1]))), axis=(0, 1))
    ys, xs = np.nonzero(cov > 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = y1 - y0, x1 - x0
    corners = np.mean([cov[y0, x0], cov[y0, x1], cov[y1, x0], cov[y1, x1]])
    inner = np.mean([cov[int(round(a)), int(round(b))] for a in (y0 + 0.2 * h, y1 - 0.2 * h)
                     for b in (x0 + 0.2 * w, x1 - 0.2 * w)])
    middle = cov[int(round((y0 + y1) / 2)), int(round((x0 + x1) / 2))]
    return "ring" if middle < 0.5 else "cross" if inner < 0.5 else "square" if corners >= 0.25 else "disc"


def test_appearance_variant_shows_the_class_in_every_event_frame_only(tmp_path):
    # without distractors the object is the only bright thing, so its shape can be read off each frame
    paths = generate_dataset(str(tmp_path), num_train=24, num_val=0, num_test=0, num_distractors=(0, 0),
                             seed=3, **APPEARANCE)
    with open(paths["train"]) as f:
        assert f.readline().strip() == "path,label,num_frames,event_start,event_end,frame_scores,static_fraction"
    rows = read_rows(paths["train"])
    assert sorted({r["label"] for r in rows}) == sorted(class_names("appearance"))
    for row in rows:
        frames = decode_grey(os.path.join(str(tmp_path), row["path"]))
        scores = np.load(os.path.join(str(tmp_path), row["frame_scores"]))
        s, e = int(row["event_start"]), int(row["event_end"])
        assert len(frames) == 32 and 6 <= e - s <= 10, row
        assert np.all(scores[s:e] == 1) and not scores[:s].any() and not scores[e:].any()
        # every event frame shows the class's shape; no frame outside the event shows anything bright
        for t in range(s, e):
            assert classify_shape(frames[t]) == row["label"], (row, t)
        # (object grey >= 0.8 * 255 = 204 where it covers a pixel; background <= ~0.54 * 255 = 137 plus noise)
        outside = np.r_[frames[:s], frames[e:]]
        assert outside.max() < 180 <= frames[s:e].max(axis=(1, 2)).min(), row
        # the object stands still: its centroid does not move during the event
        centres = np.stack([circular_centroid(f > (f.max() + np.median(f)) / 2) for f in frames[s:e]])
        assert np.abs(wrap(centres - centres[0], 32)).max() < 0.3, row


def test_appearance_variant_is_redundant_and_deterministic(tmp_path):
    kw = dict(num_train=8, num_val=0, num_test=0, seed=1, **APPEARANCE)
    a = generate_dataset(str(tmp_path / "a"), **kw)
    b = generate_dataset(str(tmp_path / "b"), **kw)
    assert filecmp.cmp(a["train"], b["train"], shallow=False)
    fractions = []
    for row in read_rows(a["train"]):
        assert filecmp.cmp(tmp_path / "a" / row["path"], tmp_path / "b" / row["path"], shallow=False)
        frames = decode_grey(str(tmp_path / "a" / row["path"]))
        s, e = int(row["event_start"]), int(row["event_end"])
        change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
        static = np.r_[False, change <= 3]  # a frozen frame decodes (near-)identical to its predecessor
        assert static.sum() / 32 == pytest.approx(float(row["static_fraction"]), abs=1e-4), row
        # the frames where the object appears and disappears are new frames, whatever else is frozen
        assert not static[s] and (e == 32 or not static[e]), row
        fractions.append(float(row["static_fraction"]))
    assert np.mean(fractions) > 0.25  # long frozen stretches: SGS's premise


def test_appearance_variant_arguments(tmp_path):
    assert class_names("appearance", 2) == ("square", "disc")
    with pytest.raises(ValueError, match="num_classes"):
        generate_dataset(str(tmp_path), num_train=1, num_classes=5, **APPEARANCE)


# ------------------------------------------------------------------------------------------------------------
# The textured and order variants (data that does not flatter SGS) and the older variants left unchanged
# ------------------------------------------------------------------------------------------------------------
def render(variant, label, seed, **kw):
    from lightning_temporal.data.synthetic import render_video

    args = dict(variant=variant, label=label, size=32, min_frames=32, max_frames=32, event_fraction=(0.3, 0.6),
                num_distractors=(1, 2), noise=0.03)
    args.update(kw)
    return render_video(np.random.default_rng(seed), **args)


@pytest.mark.parametrize("variant,label,digest", [
    ("appearance", "ring", "7843c2e83a72396498247cb7d6a2d9325e4acdf4"),
    ("redundancy", "left", "319a7d18421a0ce13ce5529f2009db3d1a718b26"),
])
def test_appearance_and_motion_content_unchanged(variant, label, digest):
    # digests of the frames and scores before the textured / order variants were added
    import hashlib

    r = render(variant, label, 7, max_frames=48, event_fraction=(0.2, 0.3))
    assert hashlib.sha1(r.frames.tobytes() + r.scores.tobytes()).hexdigest() == digest


@pytest.mark.parametrize("variant", ["textured", "order"])
def test_textured_and_order_variants_have_partial_mixed_redundancy(variant):
    labels = class_names(variant)
    fractions = []
    for seed in range(12):
        label = labels[seed % len(labels)]
        r = render(variant, label, seed)
        s, e = r.event
        assert r.frames.shape == (32, 32, 32) and r.frames.dtype == np.uint8
        fractions.append((r.scores > 0).mean())
        assert np.all(r.scores[s:e] == 1) and not r.scores[:s].any() and not r.scores[e:].any()
        # nothing frozen, even without noise and distractors: the camera pans, every frame differs from the last
        still = render(variant, label, seed, noise=0.0, num_distractors=(0, 0))
        assert (np.abs(np.diff(still.frames.astype(int), axis=0)).max(axis=(1, 2)) >= 2).all()
        # the label changes the event frames only: the same seed with the other label differs inside it alone
        other = render(variant, labels[(seed + 1) % len(labels)], seed)
        differs = np.abs(r.frames.astype(int) - other.frames.astype(int)).max(axis=(1, 2)) > 0
        assert not differs[:s].any() and not differs[e:].any()
        if variant == "order":  # both halves of the window change with the order
            mid = s + (e - s) // 2
            assert differs[s:mid].any() and differs[mid:e].any()
        else:
            assert differs[s:e].any()
    assert 0.3 - 1 / 32 <= min(fractions) and max(fractions) <= 0.6 + 1 / 32  # evidence in 30-60 % of frames


def test_order_variant_shows_both_shapes_in_every_clip(tmp_path):
    assert class_names("order") == ("disc_then_cross", "cross_then_disc")
    a, b = render("order", "disc_then_cross", 3), render("order", "cross_then_disc", 3)
    s, e = a.event
    mid = s + (e - s) // 2
    # the same stretches of the two clips hold the same objects in opposite order: a's first half object is
    # b's first half object with the other shape at the same place, so the two halves differ in both clips
    for r in (a, b):
        first, second = r.frames[s:mid].astype(float), r.frames[mid:e].astype(float)
        assert np.abs(first.mean(0) - second.mean(0)).max() > 40
    paths = generate_dataset(str(tmp_path), variant="order", num_train=4, num_val=0, num_test=0, size=32,
                             min_frames=32, max_frames=32, event_fraction=(0.3, 0.6), num_workers=0,
                             progress=False)
    rows = read_rows(paths["train"])
    assert sorted(r["label"] for r in rows) == sorted(class_names("order") * 2)
    assert "static_fraction" not in rows[0]
