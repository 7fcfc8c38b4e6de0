import pickle
import shutil
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_temporal.data.dataset import ClipDataset, SkipCounter, SkippedClip, collate_clips, load_clip, \
    num_clip_positions
from lightning_temporal.data.manifest import VideoRecord, read_csv_manifest
from lightning_temporal.data.transforms import CleanTransform, TrainTransform
from lightning_temporal.data.video import VideoError
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler, clip_seeds
from tests.videos import encode_image, reference_frames, synthetic_frame, truncate_file, write_video

LENGTHS = {"a.mp4": 40, "b.mp4": 25, "c.mp4": 10}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    write_video(str(d / "a.mp4"), 40, gop=16)
    write_video(str(d / "b.mp4"), 25, gop=None)  # one keyframe
    write_video(str(d / "c.mp4"), 10, gop=1)     # shorter than a clip span: padded
    csv = d / "m.csv"
    csv.write_text("path,label\na.mp4,walk\nb.mp4,run\nc.mp4,walk\n")
    manifest = read_csv_manifest(str(csv), progress=False)
    refs = {name: torch.from_numpy(reference_frames(str(d / name))) for name in LENGTHS}
    return d, manifest, refs


class Recorder:
    """A transform that keeps what it was given and returns it as float [C, T, H, W]."""

    def __init__(self):
        self.seen = []

    def __call__(self, clip):
        self.seen.append(clip.clone())
        return clip.permute(3, 0, 1, 2).float()


def test_num_positions(data):
    _, manifest, _ = data
    assert manifest.num_frames.tolist() == [40, 25, 10]
    for clip_len, stride in [(8, 1), (8, 2), (16, 1), (4, 3)]:
        span = (clip_len - 1) * stride + 1
        expect = [max(1, n - span + 1) for n in [40, 25, 10]]
        ds = ClipDataset(manifest, clip_len, stride)
        assert ds.num_positions.dtype == torch.int64 and ds.num_positions.tolist() == expect
        assert num_clip_positions(manifest.num_frames, clip_len, stride).tolist() == expect
    assert len(ClipDataset(manifest, 8)) == 3


@pytest.mark.parametrize("video_idx,start,clip_len,stride", [(0, 0, 8, 1), (0, 17, 8, 3), (1, 9, 8, 2),
                                                               (2, 0, 8, 2), (1, 0, 16, 1)])
def test_items_equal_sequential_decode_through_both_paths(data, video_idx, start, clip_len, stride):
    _, manifest, refs = data
    train, clean = Recorder(), CleanTransform(crop_size=32, short_side=40)
    ds = ClipDataset(manifest, clip_len, stride, transform=train, clean_transform=clean)
    item = ds[(video_idx, start)]
    ref = refs[list(LENGTHS)[video_idx]]
    n = ref.shape[0]
    idx = [min(start + stride * k, n - 1) for k in range(clip_len)]  # past the end: last frame repeats
    expected = ref[idx]
    assert torch.equal(train.seen[0], expected)
    assert torch.equal(item["clip"], expected.permute(3, 0, 1, 2).float())
    torch.testing.assert_close(item["clean"], clean(expected), rtol=0, atol=0)  # the SAME frames, clean path
    assert item["clean"].shape == (3, clip_len, 32, 32)
    assert (item["label"], item["video_idx"], item["start"]) == (manifest[video_idx].label, video_idx, start)
    # tensor and numpy indices work too
    assert ds[torch.tensor([video_idx, start])]["start"] == start


def test_no_transform_gives_float_cthw(data):
    _, manifest, refs = data
    item = ClipDataset(manifest, 4)[(0, 2)]
    assert "clean" not in item
    torch.testing.assert_close(item["clip"], refs["a.mp4"][2:6].permute(3, 0, 1, 2).float() / 255)


def test_decode_size_resizes_in_decoder(data):
    d, manifest, _ = data
    assert (manifest[0].height, manifest[0].width) == (48, 64)
    item = ClipDataset(manifest, 4, decode_size=24)[(0, 3)]
    expected = torch.from_numpy(reference_frames(str(d / "a.mp4"), size=(24, 32)))[3:7]
    torch.testing.assert_close(item["clip"], expected.permute(3, 0, 1, 2).float() / 255, rtol=0, atol=0)
    assert load_clip(manifest[1], 0, 2, size=(12, 20)).shape == (2, 12, 20, 3)
    # frame size unknown (count from the CSV): the int short side cannot be applied, full size is decoded
    rec = VideoRecord(manifest[0].path, 0, 40)
    assert load_clip(rec, 0, 2, size=24).shape == (2, 48, 64, 3)


def test_index_errors(data):
    _, manifest, _ = data
    ds = ClipDataset(manifest, 8, 2)  # video 1: 25 frames, span 15 -> 11 positions
    with pytest.raises(IndexError, match=r"start 11 out of range for video 1 \(.*b\.mp4\): it has 11 clip "
                                         r"positions 0\.\.10"):
        ds[(1, 11)]
    with pytest.raises(IndexError, match="start -1 out of range"):
        ds[(1, -1)]
    with pytest.raises(IndexError, match="video_idx 3 out of range: the manifest has 3 videos"):
        ds[(3, 0)]
    with pytest.raises(TypeError, match=r"indexed by \(video_idx, start\[, clip_seed\]\) tuples, got 0; give the "
                                        "DataLoader a ClipSampler"):
        ds[0]


def test_bad_arguments(data):
    _, manifest, _ = data
    with pytest.raises(ValueError, match="clip_len must be an int >= 1, got 0"):
        ClipDataset(manifest, 0)
    with pytest.raises(ValueError, match="stride must be an int >= 1, got 1.5"):
        ClipDataset(manifest, 8, 1.5)
    with pytest.raises(ValueError, match=r"decode_size must be None, an int short side >= 1 or \(height, width\) "
                                         r"ints >= 1, got \(1, 2, 3\)"):
        ClipDataset(manifest, 8, decode_size=(1, 2, 3))
    with pytest.raises(TypeError, match=r"transform must be a callable or None \(taking uint8 .*\), got 3"):
        ClipDataset(manifest, 8, transform=3)
    with pytest.raises(TypeError, match=r"manifest must be a VideoManifest \(read one with read_csv_manifest\)"):
        ClipDataset([], 8)


@pytest.fixture(scope="module")
def broken(tmp_path_factory, real_videos):
    """Bad files the tests make, listed in a manifest that gives their frame counts, read with probe=False (the
    counts trusted, nothing probed): what reaches the dataset when files change after the manifest was read."""
    d = tmp_path_factory.mktemp("broken")
    write_video(str(d / "good.mp4"), 20, gop=8)
    truncate_file(real_videos["carphone_pristine"], str(d / "truncated.mp4"), 0.5)
    (d / "garbage.mp4").write_bytes(bytes(range(256)) * 40)
    (d / "empty.mp4").write_bytes(b"")
    (d / "image.mp4").write_bytes(encode_image(synthetic_frame(0), "png"))
    write_video(str(d / "short.mp4"), 12, gop=4)  # the manifest claims 30 frames
    rows = ["good.mp4,x,20", "truncated.mp4,x,120", "garbage.mp4,x,40", "empty.mp4,x,40", "image.mp4,x,40",
            "short.mp4,x,30"]
    (d / "m.csv").write_text("path,label,num_frames\n" + "\n".join(rows) + "\n")
    return read_csv_manifest(str(d / "m.csv"), probe=False)


@pytest.mark.parametrize("video_idx,start", [(1, 0), (2, 0), (3, 0), (4, 0), (5, 20)])
def test_strict_raises_naming_file_and_row(broken, video_idx, start):
    ds = ClipDataset(broken, 8, strict=True)
    rec = broken[video_idx]
    with pytest.raises(VideoError) as info:
        ds[(video_idx, start)]
    msg = str(info.value)
    assert f"video {video_idx} ({rec.source})" in msg and rec.path in msg
    assert f"row {video_idx + 2}" in msg


def test_skip_marker_warns_once_per_video(broken):
    ds = ClipDataset(broken, 8, transform=TrainTransform(16, 20), clean_transform=CleanTransform(16, 20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ds[(2, 0)]
        again = ds[(2, 5)]
        other = ds[(3, 0)]
    assert isinstance(first, SkippedClip) and (first.video_idx, first.start) == (2, 0)
    assert isinstance(again, SkippedClip) and isinstance(other, SkippedClip)
    skip_warnings = [str(w.message) for w in caught if "skipping a clip" in str(w.message)]
    assert len(skip_warnings) == 2 and "garbage.mp4" in skip_warnings[0] and "empty.mp4" in skip_warnings[1]
    with pytest.warns(UserWarning, match=r"short\.mp4: start 20 is past the last decodable frame.*the manifest says "
                                         "30 frames"):
        assert isinstance(ds[(5, 20)], SkippedClip)
    good = ds[(0, 1)]
    batch = collate_clips([first, good, other])
    assert batch["clip"].shape == (1, 3, 8, 16, 16) and batch["clean"].shape == (1, 3, 8, 16, 16)
    assert batch["video_idx"].tolist() == [0] and batch["start"].tolist() == [1] and batch["label"].tolist() == [0]
    assert batch["skipped"].tolist() == [2, 3] and batch["skip_errors"] == [first.error, other.error]
    empty = collate_clips([first])
    assert empty["clip"].shape[0] == 0 and empty["clean"].shape[0] == 0 and empty["label"].shape == (0,)
    assert empty["skipped"].tolist() == [2]


def test_collate_without_skips(data):
    _, manifest, _ = data
    ds = ClipDataset(manifest, 4, transform=TrainTransform(16, 20))
    batch = collate_clips([ds[(0, 3)], ds[(2, 0)]])
    assert set(batch) == {"clip", "label", "video_idx", "start", "skipped", "skip_errors"}
    assert batch["clip"].dtype == torch.float32 and batch["clip"].shape == (2, 3, 4, 16, 16)
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [1, 1]
    assert batch["skipped"].dtype == torch.int64 and batch["skipped"].shape == (0,) and batch["skip_errors"] == []


def test_dataloader_two_workers_real_videos(real_videos, tmp_path):
    for name, path in real_videos.items():
        shutil.copy(path, tmp_path / f"{name}.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "m.csv").write_text("path,label,num_frames\nbigbuckbunny.mp4,animal,132\nbikes.mp4,street,250\n"
                                    "carphone_pristine.mp4,face,120\nbroken.mp4,face,50\n")
    manifest = read_csv_manifest(str(tmp_path / "m.csv"), probe=False)  # the broken file reaches the workers
    assert manifest.num_frames.tolist() == [132, 250, 120, 50]
    ds = ClipDataset(manifest, 8, 2, transform=TrainTransform(32, 36), clean_transform=CleanTransform(32, 36),
                     decode_size=36)
    plan = [(0, 10), (3, 0), (1, 200), (2, 0), (3, 7), (0, 117), (2, 105)]
    assert all(s < n for (v, s), n in zip(plan, ds.num_positions[[v for v, _ in plan]].tolist()))
    loader = DataLoader(ds, batch_size=2, sampler=plan, num_workers=2, collate_fn=collate_clips)
    counter = SkipCounter()
    batches = list(loader)
    for b in batches:
        counter.update(b)
    # a skip drops only its own item: every other clip stays in the batch the plan put it in
    expected_batches = [plan[i:i + 2] for i in range(0, len(plan), 2)]
    for b, want in zip(batches, expected_batches):
        kept = [(v, s) for v, s in want if v != 3]
        assert list(zip(b["video_idx"].tolist(), b["start"].tolist())) == kept
        assert b["skipped"].tolist() == [v for v, _ in want if v == 3]
        assert b["clip"].shape == (len(kept), 3, 8, 32, 32)
        for k, (v, s) in enumerate(kept):  # clean clips equal the single-process decode
            torch.testing.assert_close(b["clean"][k], ds[(v, s)]["clean"], rtol=0, atol=0)
    assert len(batches) == 4 and counter.epoch_skipped == 2 and counter.videos() == [3]
    assert "skipped 2 clip(s) of 1 video(s)" in counter.summary(epoch=0) and "broken.mp4" in counter.summary()


def test_skip_counter_epochs_state_and_pickle():
    c = SkipCounter()
    assert c.summary() == "" and c.epoch_skipped == 0
    b1 = {"skipped": torch.tensor([4, 4, 9]), "skip_errors": ["e4a", "e4b", "e9"]}
    assert c.update(b1) == 3
    assert c.update({"skipped": torch.zeros(0, dtype=torch.int64), "skip_errors": []}) == 0
    assert c.counts == {4: 2, 9: 1} and c.epoch_skipped == 3 and c.videos() == [4, 9]
    assert c.summary(epoch=2) == "epoch 2: skipped 3 clip(s) of 2 video(s) that failed to decode: e4b; e9"
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.counts == c.counts and c2.total_skipped == 3
    c.reset()
    assert c.epoch_skipped == 0 and c.total_skipped == 3 and c.summary() == ""
    c3 = SkipCounter()
    c3.load_state_dict(c2.state_dict())
    assert c3.counts == {4: 2, 9: 1} and c3.errors[9] == "e9" and c3.total_skipped == 3
    many = SkipCounter()
    many.update({"skipped": torch.arange(7), "skip_errors": [f"e{i}" for i in range(7)]})
    assert many.summary(max_listed=2).endswith("e0; e1 (+5 more videos)")


# ------------------------------------------------------------------------- augmentation as a function of the clip
def _augmented_clips(manifest, *, num_workers, world, epoch, global_seed):
    """The augmented clip of every video in one epoch, read through ``world`` simulated ranks' ClipLoaders."""
    torch.manual_seed(global_seed)  # must not matter: no draw comes from the global RNG
    clips, keys = {}, {}
    for rank in range(world):
        ds = ClipDataset(manifest, 4, transform=TrainTransform(16, 20))
        sampler = ClipSampler(ds.num_positions, seed=7, num_replicas=world, rank=rank)
        sampler.set_epoch(epoch)
        for b in ClipLoader(ds, batch_size=2, sampler=sampler, num_workers=num_workers, collate_fn=collate_clips):
            for v, s, clip in zip(b["video_idx"].tolist(), b["start"].tolist(), b["clip"]):
                clips.setdefault(v, clip)  # a DDP padding repeat (world 2) comes after its original
                keys.setdefault(v, s)
    return clips, keys


def test_augmentation_is_the_same_for_any_workers_ranks_or_global_rng(data):
    _, manifest, _ = data
    ref, starts = _augmented_clips(manifest, num_workers=0, world=1, epoch=2, global_seed=0)
    # independent computation: the plan's clip seed drives TrainTransform directly on a sequential decode
    sampler = ClipSampler(ClipDataset(manifest, 4).num_positions, seed=7)
    vid, st = sampler.epoch_plan(2)
    seeds = clip_seeds(7, 2, vid, torch.arange(vid.numel()))
    for v, s, seed in zip(vid.tolist(), st.tolist(), seeds.tolist()):
        frames = load_clip(manifest[v], s, 4)
        want = TrainTransform(16, 20)(frames, generator=torch.Generator().manual_seed(seed))
        assert starts[v] == s and torch.equal(ref[v], want)
    for kw in (dict(num_workers=2, world=1, global_seed=1), dict(num_workers=0, world=2, global_seed=2),
               dict(num_workers=2, world=2, global_seed=3)):
        got, _ = _augmented_clips(manifest, epoch=2, **kw)
        assert all(torch.equal(got[v], ref[v]) for v in ref), kw
    # and the draws do vary: another epoch crops or flips the same clip position differently
    draws = set()
    for epoch in range(8):
        g = torch.Generator().manual_seed(int(clip_seeds(7, epoch, torch.tensor([0]), torch.tensor([0]))))
        draws.add(TrainTransform(16, 20)(load_clip(manifest[0], 0, 4), generator=g).sum().item())
    assert len(draws) > 1


def test_transform_without_generator_runs_on_a_forked_seeded_rng(data):
    _, manifest, _ = data
    ds = ClipDataset(manifest, 4, transform=lambda frames: frames.permute(3, 0, 1, 2).float() + torch.rand(()))
    state = torch.get_rng_state()
    a, b, c = ds[(0, 3, 11)]["clip"], ds[(0, 3, 11)]["clip"], ds[(0, 3, 12)]["clip"]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    assert torch.equal(a, load_clip(manifest[0], 3, 4).permute(3, 0, 1, 2).float() + torch.rand(()))
    # a key without a seed is augmented as a function of its position alone
    assert torch.equal(ds[(0, 3)]["clip"], ds[(0, 3)]["clip"])


def test_collate_in_a_worker_stacks_into_shared_memory():
    """Inside a DataLoader worker ``collate_clips`` writes ``"clip"`` and ``"clean"`` straight into shared memory,
    so handing the batch to the main process copies nothing more (a plain stack would be copied into shared
    memory once more when the batch is pickled); in this process it stays in ordinary memory. The values are the
    same either way."""
    items = [{"clip": torch.randn(3, 2, 4, 4), "clean": torch.randn(3, 2, 4, 4), "label": i % 2, "video_idx": i,
              "start": 2 * i} for i in range(3)]

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    def collate(batch):
        out = collate_clips(batch)
        out["shared_in_worker"] = (out["clip"].is_shared(), out["clean"].is_shared())
        return out

    ref = collate_clips(items)
    assert not ref["clip"].is_shared() and not ref["clean"].is_shared()
    got = next(iter(DataLoader(Items(), batch_size=3, num_workers=1, collate_fn=collate)))
    assert got["shared_in_worker"] == (True, True)
    for key in ("clip", "clean", "label", "video_idx", "start"):
        assert torch.equal(got[key], ref[key]), key
