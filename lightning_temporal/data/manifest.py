"""Video manifests: which videos, their labels, frame counts, event windows and per-frame scores.

A manifest is read once at start-up, from any of the layouts of :data:`MANIFEST_FORMATS` (:func:`read_manifest`).
Frame counts missing from the file are probed (exact decodable counts, in parallel), counts it gives are checked
against the files, and both are cached in the user's cache folder (:func:`cache_folder`, never in the dataset's
folders), keyed by path + size + mtime, so a large dataset is probed once and a changed file is probed again.

Row numbers in error messages are the file's line numbers (the header is row 1).
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import difflib
import hashlib
import io
import json
import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from lightning_temporal.checks import check_choice

__all__ = [
    "ManifestError",
    "ManifestFileNotFoundError",
    "UnknownLabelError",
    "VideoRecord",
    "VideoManifest",
    "read_csv_manifest",
    "read_ucf101_split",
    "read_hmdb51_split",
    "read_kinetics_csv",
    "read_video_list",
    "read_rawframe_list",
    "read_class_folders",
    "read_manifest",
    "read_text",
    "MANIFEST_FORMATS",
    "cache_folder",
    "probe_frame_counts",
    "path_fingerprint",
]

CSV_COLUMNS = ("path", "label", "num_frames", "event_start", "event_end", "frame_scores")
_CACHE_VERSION = 1


class ManifestError(ValueError):
    """A manifest (or split file) that cannot be used; the message names the file, the row and what to do."""


class UnknownLabelError(ManifestError):
    """A manifest row whose label is not in the class list; the message names the file, row, label and classes."""


class ManifestFileNotFoundError(ManifestError, FileNotFoundError):
    """A manifest, video or frame-score file named by a manifest does not exist."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a manifest.

    >>> VideoRecord("/data/a.mp4", label=2, num_frames=120, event_start=30, event_end=50).event_end
    50

    ``path``: absolute path of a video file or of a folder of frame images. ``label``: class index.
    ``num_frames``: exact number of decodable frames (None when not known yet: read with ``probe=True``).
    ``event_start``/``event_end``: frame indices of the labelled event, end exclusive (None when unknown).
    ``frame_scores``: path of a per-frame score file (``.npy`` or ``.txt``), or None.
    ``height``/``width``: decoded frame size in pixels when probed, else None.
    ``source``: "file, row n" the record came from (for error messages).
    ``extra``: the row's further CSV columns (e.g. ``static_fraction`` of the synthetic data), as strings.
    """

    path: str
    label: int
    num_frames: Optional[int] = None
    event_start: Optional[int] = None
    event_end: Optional[int] = None
    frame_scores: Optional[str] = None
    height: Optional[int] = None
    width: Optional[int] = None
    source: str = field(default="", compare=False)
    extra: Dict[str, str] = field(default_factory=dict, compare=False)


class VideoManifest:
    """An ordered list of :class:`VideoRecord` plus the class names; video ``i`` is ``manifest[i]``.

    >>> m = VideoManifest([VideoRecord("/d/a.mp4", 1, 40), VideoRecord("/d/b.mp4", 0, 64)], ["run", "walk"])
    >>> m.num_frames.tolist(), m.labels.tolist(), len(m.subset([1]))
    ([40, 64], [1, 0], 1)

    ``dropped``: (source, path, reason) of rows left out by a loader called with ``on_bad_video="skip"``.
    """

    def __init__(self, records: Sequence[VideoRecord], class_names: Sequence[str],
                 dropped: Sequence[Tuple[str, str, str]] = ()):
        self.records: List[VideoRecord] = list(records)
        self.class_names: List[str] = list(class_names)
        self.dropped: List[Tuple[str, str, str]] = list(dropped)
        k = len(self.class_names)
        for r in self.records:
            if not 0 <= r.label < k:
                raise ManifestError(f"{r.source or r.path}: label index {r.label} is outside 0..{k - 1} "
                                    f"({k} classes); fix the label or the class list")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> VideoRecord:
        return self.records[i]

    def __repr__(self) -> str:
        return f"VideoManifest({len(self)} videos, {len(self.class_names)} classes)"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def paths(self) -> List[str]:
        return [r.path for r in self.records]

    @property
    def num_frames(self) -> torch.Tensor:
        """int64 [V]: frames per video. Raises ManifestError when a count is unknown."""
        unknown = [r for r in self.records if r.num_frames is None]
        if unknown:
            r = unknown[0]
            raise ManifestError(f"{r.source or r.path}: frame count unknown for {len(unknown)} video(s), "
                                f"first {r.path}; read the manifest with probe=True or add a num_frames column")
        return torch.tensor([r.num_frames for r in self.records], dtype=torch.int64)

    @property
    def labels(self) -> torch.Tensor:
        """int64 [V]: class index per video."""
        return torch.tensor([r.label for r in self.records], dtype=torch.int64)

    @property
    def events(self) -> torch.Tensor:
        """int64 [V, 2]: (event_start, event_end) per video, end exclusive; -1 where no event is given."""
        return torch.tensor([[-1 if r.event_start is None else r.event_start,
                              -1 if r.event_end is None else r.event_end] for r in self.records],
                            dtype=torch.int64).reshape(len(self.records), 2)

    def rarest_labels(self, k: int = 3, rows_listed: int = 3) -> str:
        """The ``k`` least used classes with their rows, rarest first, as one line for error messages, e.g.
        ``'lfet': 1 video (train.csv, row 7); 'up': 2 videos (train.csv, row 3; train.csv, row 9)``.

        A typo in a label makes a class of its own that is usually seen once: this names it. Classes of the class
        list that no row uses come first (0 videos).
        """
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        order = torch.argsort(counts, stable=True)[:k].tolist()
        parts = []
        for c in order:
            n = int(counts[c])
            rows = [r.source or r.path for r in self.records if r.label == c][:rows_listed] if n else []
            listed = f" ({'; '.join(rows)}{'; ...' if n > len(rows) else ''})" if rows else ""
            parts.append(f"{self.class_names[c]!r}: {n} video{'s' if n != 1 else ''}{listed}")
        return "; ".join(parts)

    def load_frame_scores(self, i: int) -> Optional[torch.Tensor]:
        """float32 [L]: per-frame scores of video ``i`` (None when it has none); checks L == num_frames."""
        r = self.records[i]
        if r.frame_scores is None:
            return None
        where = r.source or r.path
        if not os.path.isfile(r.frame_scores):
            raise ManifestFileNotFoundError(f"{where}: frame_scores file {r.frame_scores} not found; "
                                            "fix the path (relative to the manifest) or remove it")
        try:
            if r.frame_scores.endswith(".npy"):
                scores = np.load(r.frame_scores, allow_pickle=False)
            else:
                scores = np.loadtxt(r.frame_scores, dtype=np.float64, ndmin=1)
        except (ValueError, OSError) as err:
            raise ManifestError(f"{where}: cannot read frame_scores {r.frame_scores} ({err}); write a .npy "
                                "array or a .txt file with one float per line") from err
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim != 1:
            raise ManifestError(f"{where}: frame_scores {r.frame_scores} has shape {scores.shape}; "
                                "expected one score per frame (a 1-D array)")
        if r.num_frames is not None and scores.shape[0] != r.num_frames:
            raise ManifestError(f"{where}: frame_scores {r.frame_scores} has {scores.shape[0]} values but the "
                                f"video has {r.num_frames} frames; give one score per decoded frame")
        if not np.isfinite(scores).all():
            raise ManifestError(f"{where}: frame_scores {r.frame_scores} holds NaN or inf; fix the file")
        return torch.from_numpy(scores)

    def subset(self, indices: Iterable[int]) -> "VideoManifest":
        """A manifest of the videos ``indices`` (in that order), same class names."""
        idx = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices, dtype=torch.int64)
        return VideoManifest([self.records[i] for i in idx.tolist()], self.class_names)


def path_fingerprint(paths: Sequence[str]) -> torch.Tensor:
    """int64 ``[V]``: a 64-bit hash (BLAKE2b) of the last two components (folder/file) of each path, in order.

    The last two components name a video in the common layouts (``Class/v_x.avi``, ``label/id.mp4``,
    ``videos/train_00001.mp4``) and survive moving the dataset to another folder or machine; the order matters
    (row i of a manifest is video i of the score tables).
    """
    tails = []
    for p in paths:
        parts = os.path.normpath(os.fspath(p)).replace("\\", "/").split("/")
        tails.append("/".join(parts[-2:]))
    digests = b"".join(hashlib.blake2b(t.encode("utf-8", "surrogateescape"), digest_size=8).digest() for t in tails)
    return torch.from_numpy(np.frombuffer(digests, dtype="<i8").copy()) if tails else torch.zeros(0, dtype=torch.int64)


# --------------------------------------------------------------------------------------------- parsing helpers
@dataclass
class _Row:
    """A manifest row before labels are resolved and counts probed; values still raw strings."""

    source: str
    path: str
    label: str
    num_frames: str = ""
    event_start: str = ""
    event_end: str = ""
    frame_scores: str = ""
    alternatives: Tuple[str, ...] = ()  # other places the video was looked for (named when it is missing)
    extra: Dict[str, str] = field(default_factory=dict)  # further CSV columns, kept as written


def _where(file: str, line: int) -> str:
    return f"{file}, row {line}"


def read_text(path: str, encoding: Optional[str] = None) -> str:
    """The text of a manifest, list or class file. ``encoding`` None: UTF-8 (a leading byte-order mark, which
    spreadsheets write, is dropped). Raises ManifestError naming the file, the row and the byte that is not in
    the encoding, and the fix (save as UTF-8, or give the file's encoding)."""
    with open(path, "rb") as f:
        data = f.read()
    name = encoding or "utf-8"
    try:
        return data.decode("utf-8-sig" if encoding is None else encoding)
    except LookupError:
        raise ManifestError(f"{path}: encoding {encoding!r} is not known to Python; give a codec name such as "
                            "'utf-8', 'latin-1' or 'cp1252'") from None
    except UnicodeDecodeError as err:
        row = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start:err.end].hex(" ")
        raise ManifestError(
            f"{path}, row {row}: byte(s) {bad} at column {column} are not {name} (the file was saved in another "
            "encoding, e.g. Latin-1 or Windows-1252 by a spreadsheet); save it as UTF-8, or give its encoding: "
            "encoding='latin-1' (TemporalDataModule: data.manifest_encoding: latin-1)") from None


def _split_lines(path: str, encoding: Optional[str] = None) -> Iterator[Tuple[str, List[str], str]]:
    """``(where, fields, line)`` of each non-blank line of the text file ``path``: ``where`` names the file and
    row for error messages, ``fields`` is the line split on whitespace."""
    for line_no, line in enumerate(read_text(path, encoding).splitlines(), 1):
        parts = line.split()
        if parts:
            yield _where(path, line_no), parts, line


def _parse_count(text: str, column: str, where: str, minimum: int) -> Optional[int]:
    text = text.strip()
    if text == "":
        return None
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ManifestError(f"{where}: {column} = {text!r} is not an integer; write a whole number "
                            f">= {minimum} (or leave it empty)")
    value = int(text)
    if value < minimum:
        raise ManifestError(f"{where}: {column} = {value} is below {minimum}; write a whole number >= {minimum}")
    return value


def _load_class_list(classes: Union[None, str, os.PathLike, Sequence[str]],
                     encoding: Optional[str] = None) -> Optional[List[str]]:
    """Class names from a sequence, or from a text file with one name per line (optionally "index name")."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        path = os.fspath(classes)
        if not os.path.isfile(path):
            raise ManifestFileNotFoundError(f"{path}: class list not found; pass the file with one class "
                                            "name per line, or a list of names")
        names = []
        for line in read_text(path, encoding).splitlines():
            parts = line.strip().split(maxsplit=1)
            if parts:  # "3 air drumming" -> "air drumming"; a plain line is the whole name
                names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else line.strip())
        classes = names
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ManifestError(f"class list has duplicate names {dup[:5]}; give each class once")
    return names


def _resolve_labels(rows: Sequence[_Row], classes: Optional[List[str]]) -> Tuple[List[int], List[str]]:
    """Class index per row. A label is a class name or an integer index into the class list.

    Without ``classes`` the class list is the sorted set of the names used; if every label is an integer
    the classes are "0" … str(max).
    """
    is_int = [bool(re.fullmatch(r"[+-]?\d+", r.label.strip())) for r in rows]
    if classes is None:
        names = sorted({r.label.strip() for r, i in zip(rows, is_int) if not i})
        if not names:
            top = max((int(r.label) for r in rows), default=-1)
            names = [str(k) for k in range(top + 1)]
        classes = names
    lookup = {c: k for k, c in enumerate(classes)}
    out = []
    for r, i in zip(rows, is_int):
        text = r.label.strip()
        if text in lookup:  # a name match wins, so numeric class names work
            out.append(lookup[text])
        elif i:
            k = int(text)
            if not 0 <= k < len(classes):
                raise UnknownLabelError(f"{r.source}: label index {k} is outside 0..{len(classes) - 1} "
                                    f"({len(classes)} classes); fix the label or pass the full class list")
            out.append(k)
        else:
            shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
            lower = {c.lower(): c for c in classes}
            close = difflib.get_close_matches(text.lower(), list(lower), n=1, cutoff=0.7)
            hint = f" (did you mean {lower[close[0]]!r}?)" if close else ""
            raise UnknownLabelError(f"{r.source}: label {text!r} is not in the class list{hint}; known classes: "
                                f"{shown}. Fix the label, or add the class to the class list")
    return out, classes


def _check_repeats(rows: Sequence[_Row], labels: Sequence[int], class_names: Sequence[str],
                   allow_repeats: bool) -> None:
    """A video listed twice is an error naming both rows: always under two labels (a video has one label), and
    under the same label unless ``allow_repeats`` (deliberate oversampling)."""
    first: Dict[str, int] = {}
    repeats = []  # (first row, repeated row)
    for i, r in enumerate(rows):
        key = os.path.normcase(os.path.normpath(r.path))
        j = first.setdefault(key, i)
        if j != i:
            repeats.append((j, i))
    if not repeats:
        return
    relabelled = [(j, i) for j, i in repeats if labels[j] != labels[i]]
    if relabelled:
        j, i = relabelled[0]
        more = f" ({len(relabelled)} videos are listed under two labels)" if len(relabelled) > 1 else ""
        raise ManifestError(f"{rows[i].source}: video {rows[i].path} is listed again under label "
                            f"{class_names[labels[i]]!r}; {rows[j].source} lists it under {class_names[labels[j]]!r}"
                            f"{more}. A video has one label: remove the wrong row")
    if not allow_repeats:
        j, i = repeats[0]
        more = f" ({len(repeats)} repeated rows in all)" if len(repeats) > 1 else ""
        raise ManifestError(f"{rows[i].source}: video {rows[i].path} repeats {rows[j].source} (label "
                            f"{class_names[labels[i]]!r}){more}. Remove the repeated row, or pass "
                            "allow_repeats=True (data.allow_repeats: true) to train it more often on purpose")


# --------------------------------------------------------------------------------------------- frame-count cache
def _stat_key(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        from lightning_temporal.data.frames import split_pattern_path  # local: keeps manifest import light

        split = split_pattern_path(path)  # "folder/img_{:05d}.jpg": a frame folder read with that pattern
        if split is None:
            return None
        st = os.stat(split[0])
    return st.st_size, st.st_mtime_ns


def cache_folder() -> str:
    """Where frame counts are cached: ``$XDG_CACHE_HOME/lightning_temporal/frames`` (default
    ``~/.cache/lightning_temporal/frames``), one JSON file per manifest, never inside the dataset's folders."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lightning_temporal", "frames")


def _user_cache_path(cache_path: str) -> str:
    digest = hashlib.sha1(os.path.abspath(cache_path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(cache_folder(), f"{digest}_{os.path.basename(cache_path)}")


def _read_cache(cache_path: str) -> Dict[str, list]:
    """Entries of the user cache file of ``cache_path`` and, from older versions, of ``cache_path`` itself (beside
    the manifest), merged; each is checked against size + mtime before use anyway."""
    videos: Dict[str, list] = {}
    for p in (cache_path, _user_cache_path(cache_path)):
        if os.path.isfile(p):
            try:
                with open(p) as f:
                    data = json.load(f)
                if data.get("version") == _CACHE_VERSION:
                    videos.update(data["videos"])
            except (OSError, ValueError, KeyError, AttributeError, TypeError):
                warnings.warn(f"{p}: frame-count cache unreadable; probing again and rewriting it")
    return videos


def _write_cache(cache_path: str, videos: Dict[str, list]) -> str:
    """Write the cache in the user cache folder (:func:`cache_folder`), keyed by ``cache_path`` (the manifest):
    dataset folders may be read-only or shared. Returns where it went ("" when nowhere)."""
    payload = json.dumps({"version": _CACHE_VERSION, "videos": videos}, separators=(",", ":"))
    p = _user_cache_path(cache_path)
    tmp = f"{p}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(tmp, "w") as f:
            f.write(payload)
        os.replace(tmp, p)  # atomic: a reader (another rank) never sees half a file
        return p
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        warnings.warn(f"{p}: cannot write the frame-count cache of {cache_path} ({err}); the counts will be probed "
                      "again next time. Set XDG_CACHE_HOME to a writable folder to keep them")
        return ""


def _default_probe(path: str):
    from lightning_temporal.data.video import probe  # local: keeps manifest import light

    return probe(path)


def _demux_probe(path: str):
    from lightning_temporal.data.video import probe  # local: keeps manifest import light

    return probe(path, exact=False)


def probe_frame_counts(paths: Sequence[str], *, cache_path: Optional[str] = None,
                       probe_fn: Optional[Callable[[str], object]] = None, num_workers: Optional[int] = None,
                       progress: Optional[bool] = None,
                       stat_keys: Optional[Sequence[Optional[Tuple[int, int]]]] = None,
                       ) -> Tuple[List[Optional[Tuple[int, int, int]]], Dict[int, str]]:
    """Exact (num_frames, height, width) per path, from the cache when path, size and mtime match.

    Unknown entries are probed in a thread pool (PyAV releases the GIL while decoding) with a progress bar
    (``progress=None``: shown when stderr is a terminal). ``probe_fn(path)`` returns a ``VideoInfo`` (or
    an int frame count) and raises on a broken video. ``stat_keys``: (size, mtime_ns) per path when the
    caller has already stat-ed the files. Returns the per-path results (None where probing
    failed) and ``{index: error message}`` for the failures; failures are not cached, so they are retried.
    """
    probe_fn = probe_fn or _default_probe
    cached = _read_cache(cache_path) if cache_path else {}
    results: List[Optional[Tuple[int, int, int]]] = [None] * len(paths)
    keys = list(stat_keys) if stat_keys is not None else [_stat_key(p) for p in paths]
    todo = []
    for i, (p, key) in enumerate(zip(paths, keys)):
        hit = cached.get(p)
        if key is not None and hit is not None and hit[0] == key[0] and hit[1] == key[1]:
            results[i] = (hit[2], hit[3], hit[4])
        else:
            todo.append(i)
    errors: Dict[int, str] = {}
    if todo:
        if progress is None:
            progress = sys.stderr.isatty()
        workers = num_workers or min(32, 2 * (os.cpu_count() or 1))
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="probing frame counts", unit="video", disable=not progress)
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(probe_fn, paths[i]): i for i in todo}
                for fut in concurrent.futures.as_completed(futures):
                    i = futures[fut]
                    bar.update(1)
                    try:
                        info = fut.result()
                    except Exception as err:  # any probe failure is reported per video, never dropped
                        errors[i] = str(err) or type(err).__name__
                        continue
                    if isinstance(info, (int, np.integer)):
                        results[i] = (int(info), -1, -1)
                    else:
                        results[i] = (int(info.num_frames), int(info.height), int(info.width))
                    if results[i][0] <= 0:
                        errors[i] = f"{paths[i]}: zero decodable frames; re-encode or remove the file"
                        results[i] = None
        finally:  # save what was probed even when interrupted: a restart resumes from there
            bar.close()
            if cache_path:
                videos = {p: [k[0], k[1], *r] for p, k, r in zip(paths, keys, results)
                          if r is not None and k is not None}
                _write_cache(cache_path, videos)
    return results, errors


# --------------------------------------------------------------------------------------------- manifest builder
def _record_of(r: _Row, label: int, csv_dir: Optional[str]) -> VideoRecord:
    """The :class:`VideoRecord` of a row, its counts and events checked (``num_frames`` None when not given)."""
    n = _parse_count(r.num_frames, "num_frames", r.source, 1)
    s = _parse_count(r.event_start, "event_start", r.source, 0)
    e = _parse_count(r.event_end, "event_end", r.source, 1)
    if (s is None) != (e is None):
        raise ManifestError(f"{r.source}: only one of event_start/event_end is given; give both or neither")
    if s is not None and e <= s:
        raise ManifestError(f"{r.source}: event_end = {e} <= event_start = {s}; the event spans frames "
                            "[event_start, event_end) with end exclusive, so end must exceed start")
    fs = r.frame_scores.strip() or None
    if fs is not None:
        fs = _join(csv_dir or "", fs)
        if not os.path.isfile(fs):
            raise ManifestFileNotFoundError(f"{r.source}: frame_scores file {fs} not found; fix the path "
                                            "(relative to the manifest) or leave the column empty")
    return VideoRecord(r.path, label, num_frames=n, event_start=s, event_end=e, frame_scores=fs, source=r.source,
                       extra=dict(r.extra))


def _build(rows: List[_Row], *, file: str, classes, cache_path: str, probe: bool, probe_fn, num_workers,
           progress, on_bad_video: str, csv_dir: Optional[str], allow_repeats: bool = False,
           encoding: Optional[str] = None) -> VideoManifest:
    check_choice("on_bad_video", on_bad_video, ("raise", "skip"))
    if not rows:
        raise ManifestError(f"{file}: lists no videos; add rows (or check the split / train arguments)")
    labels, class_names = _resolve_labels(rows, _load_class_list(classes, encoding))
    _check_repeats(rows, labels, class_names, allow_repeats)
    dropped: List[Tuple[str, str, str]] = []

    def bad(row: _Row, msg: str, exc=ManifestError):
        if on_bad_video == "raise":
            raise exc(f"{row.source}: {msg}")
        dropped.append((row.source, row.path, msg))

    records: Dict[int, VideoRecord] = {}  # row index -> record, for the rows whose video exists
    keys: List[Optional[Tuple[int, int]]] = [None] * len(rows)
    for i, r in enumerate(rows):
        record = _record_of(r, labels[i], csv_dir)
        keys[i] = _stat_key(r.path)  # one stat per file: existence here, cache validity when probing
        if keys[i] is None:
            tried = " or ".join([r.path, *r.alternatives])
            bad(r, f"video {tried} not found; fix the path (relative to the manifest or root=) or remove the "
                   "row", ManifestFileNotFoundError)
            continue
        records[i] = record

    need = [i for i, rec in records.items() if rec.num_frames is None] if probe else []
    claimed = [i for i, rec in records.items() if rec.num_frames is not None] if probe else []
    over: List[str] = []
    unchecked: List[str] = []
    # Counts a row gives are claims: checked against the file (a demux pass, ~1 ms a video, cached) before
    # anything is sized by them; the file's count wins over a larger claim.
    for rows_of, fn, cache in ((need, probe_fn, cache_path),
                               (claimed, probe_fn or _demux_probe, cache_path if probe_fn is not None
                                else cache_path.replace(".frames.json", ".demux-frames.json"))):
        if not rows_of:
            continue
        results, errors = probe_frame_counts([rows[i].path for i in rows_of], cache_path=cache, probe_fn=fn,
                                             num_workers=num_workers, progress=progress,
                                             stat_keys=[keys[i] for i in rows_of])
        for j in sorted(errors):
            if rows_of is claimed and on_bad_video == "raise" and os.path.isfile(rows[claimed[j]].path):
                # a video file that cannot be read: the row's count stays (unchecked), training skips and counts
                # its clips and evaluation skips it, as for a file that breaks after the manifest was read (a
                # frame folder that cannot be listed is a setting to fix, e.g. frame_pattern: it raises)
                unchecked.append(f"{rows[claimed[j]].source}: {errors[j]}")
                continue
            bad(rows[rows_of[j]], f"cannot probe the video ({errors[j]}); re-encode or remove the row")
            del records[rows_of[j]]
        for j, i in enumerate(rows_of):
            if results[j] is None:
                continue
            n, h, w = results[j]
            claim = records[i].num_frames
            if claim is not None and claim > n:
                over.append(f"{rows[i].source}: num_frames = {claim} but {rows[i].path} has {n}")
            if claim is not None and claim <= n:
                n = claim  # fewer frames than the file holds: the row's choice
            records[i] = dataclasses.replace(records[i], num_frames=n, height=h if h > 0 else None,
                                             width=w if w > 0 else None)
    if unchecked:
        warnings.warn(f"{len(unchecked)} manifest row(s) give a frame count that cannot be checked, the video cannot be "
                      f"read: {'; '.join(unchecked[:5])}{' ...' if len(unchecked) > 5 else ''}. Their counts are kept; "
                      "in training their clips are skipped and counted, in evaluation the videos are skipped. Fix or "
                      "remove the files (on_bad_video='skip' leaves such rows out)")
    if over:
        warnings.warn(f"{len(over)} manifest row(s) claim more frames than the video holds, so the video's own count "
                      f"is used: {'; '.join(over[:5])}{' ...' if len(over) > 5 else ''}. Fix the num_frames column "
                      "(or leave it empty to have it probed)")
    for rec in records.values():
        if rec.event_end is not None and rec.num_frames is not None and rec.event_end > rec.num_frames:
            raise ManifestError(f"{rec.source}: event_end = {rec.event_end} is beyond the video's {rec.num_frames} "
                                "frames; event bounds are frame indices in [0, num_frames]")
    return _manifest_with_dropped(file, len(rows), list(records.values()), class_names, dropped)


def _manifest_with_dropped(file: str, num_rows: int, records: List[VideoRecord], class_names: List[str],
                           dropped: List[Tuple[str, str, str]]) -> VideoManifest:
    """The manifest of the kept records; one warning listing the rows left out, or an error if none is left."""
    if dropped and not records:
        raise ManifestError(f"{file}: every one of its {num_rows} videos was left out, first {dropped[0][0]}: "
                            f"{dropped[0][2]}")
    if dropped:
        listed = "; ".join(f"{src}: {msg}" for src, _, msg in dropped[:5])
        warnings.warn(f"{len(dropped)} of {num_rows} manifest rows left out (on_bad_video='skip'): {listed}"
                      + (" ..." if len(dropped) > 5 else "") + "; see manifest.dropped for all of them")
    return VideoManifest(records, class_names, dropped)


def _require_file(path: str, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestFileNotFoundError(f"{path}: {what} not found; check the path")
    return path


def _join(root: str, p: str) -> str:
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(root, p))


_COMMON_DOC = """
    ``probe``: probe the exact frame count of videos whose count is not given, and check every count a row
    gives against its file (a demux pass, ~1 ms a video): a count above the file's is a warning naming the row,
    and the file's count is used; a count whose file cannot be read is kept with a warning naming the row (its
    clips are skipped and counted in training). Probed counts are cached per list file in :func:`cache_folder`
    (``$XDG_CACHE_HOME/lightning_temporal/frames``), keyed by path + size + mtime; ``probe=False`` trusts the
    counts given (nothing is checked).
    ``probe_fn``: replaces :func:`lightning_temporal.data.video.probe`, which decodes each file once for an
    exact count; for a very large dataset ``functools.partial(probe, exact=False)`` counts packets instead
    (~1 ms a video, exact for intact files; a truncated file then over-counts and its late clips are skipped).
    ``num_workers``: probing threads; ``progress``: show a progress bar (None: when stderr is a terminal).
    ``on_bad_video``: "raise" (default) stops at a missing or undecodable video with its row; "skip" leaves
    such rows out with one warning and lists them in ``manifest.dropped``.
    ``allow_repeats``: a video listed twice is an error naming both rows unless this is True (deliberate
    oversampling: each row is then a video of its own, with its own score table); a video listed under two
    labels is always an error.
    ``encoding``: the text encoding of the list (and class list) files; default UTF-8 (with or without a
    byte-order mark). A file in another encoding is an error naming the file, the row and this argument.
"""

MANIFEST_FORMATS = ("csv", "ucf101", "hmdb51", "kinetics", "folders", "video_list", "rawframe_list")
_FORMAT_HELP = ("supported formats (manifest_format): csv (path,label[,num_frames,...] with a header), "
                "video_list (space-separated 'path label' lines: PyTorchVideo from_csv, MMAction2 VideoDataset), "
                "rawframe_list ('frame_dir total_frames label' lines: MMAction2 RawframeDataset), folders "
                "(root/<class>/<video>), ucf101, hmdb51 (official split files), kinetics (annotation CSV)")


def _looks_like_list(first_line: str) -> Optional[str]:
    """The list format a CSV's first line looks like ('video_list' / 'rawframe_list'), else None."""
    if "," in first_line:
        return None
    parts = first_line.split()
    if len(parts) == 3 and re.fullmatch(r"\d+", parts[1]):
        return "rawframe_list"
    if len(parts) >= 2:
        return "video_list"
    return None


def read_csv_manifest(path, classes=None, root=None, probe: bool = True, *, probe_fn=None,
                      num_workers: Optional[int] = None, progress: Optional[bool] = None,
                      on_bad_video: str = "raise", allow_repeats: bool = False,
                      frame_pattern: Optional[str] = None, encoding: Optional[str] = None) -> VideoManifest:
    """Read a CSV manifest ``path,label[,num_frames][,event_start][,event_end][,frame_scores]``.

    >>> m = read_csv_manifest("train.csv")                    # doctest: +SKIP
    >>> m.num_frames, m.labels, m.class_names                  # doctest: +SKIP

    ``path`` is relative to ``root`` (default: the CSV's folder) or absolute: a video file or a folder of
    frame images. ``label`` is a class name or an integer index into ``classes`` (a list of names or a file
    with one name per line; default: the sorted names used). ``event_start``/``event_end`` are frame
    indices, end exclusive. ``frame_scores`` is a ``.npy``/``.txt`` path relative to the CSV.
    ``frame_pattern`` (e.g. ``"img_{:05d}.jpg"``): how the frame images of the rows that are folders are named
    (default: the one naming pattern each folder holds); a row may also give a pattern path
    ``folder/img_{:05d}.jpg`` itself. See :mod:`lightning_temporal.data.frames`. A space-separated list (no
    header) is refused with an error naming the formats that read it (:func:`read_video_list`,
    :func:`read_rawframe_list`).
    """
    if frame_pattern is not None:
        from lightning_temporal.data.frames import check_frame_pattern  # local: keeps manifest import light

        check_frame_pattern(frame_pattern)
    path = _require_file(path, "manifest")
    csv_dir = os.path.dirname(os.path.abspath(path))
    root = csv_dir if root is None else os.path.abspath(os.fspath(root))
    rows = []
    text = read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise ManifestError(f"{path}: empty file; the first row must be a header "
                            f"'path,label[,num_frames][,event_start][,event_end][,frame_scores]'")
    header = [h.strip() for h in header]
    if any(not h for h in header) or "path" not in header or "label" not in header or len(set(header)) != len(header):
        first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
        kind = _looks_like_list(first)
        if kind is not None:
            raise ManifestError(f"{path}, row 1: {first.strip()!r} is a space-separated list, not a CSV manifest; "
                                f"read it as manifest_format: {kind} (read_manifest(..., format={kind!r})). "
                                f"{_FORMAT_HELP[0].upper()}{_FORMAT_HELP[1:]}")
        raise ManifestError(f"{path}, row 1: header {header} is not valid; write a header with 'path' and "
                            f"'label' and optionally {list(CSV_COLUMNS[2:])}, each once (or read the file in its "
                            f"own layout; {_FORMAT_HELP})")
    for values in reader:
        if not values or all(not v.strip() for v in values):
            continue  # blank line
        where = _where(path, reader.line_num)
        if len(values) != len(header):
            raise ManifestError(f"{where}: {len(values)} columns but the header has {len(header)} "
                                f"({','.join(header)}); fix the row (quote fields that contain commas)")
        d = dict(zip(header, values))
        if not d["path"].strip() or not d["label"].strip():
            raise ManifestError(f"{where}: empty path or label; every row needs both")
        extra = {h: v for h, v in d.items() if h not in CSV_COLUMNS}
        video = _join(root, d["path"].strip())
        if frame_pattern is not None and os.path.isdir(video):
            video = os.path.join(video, frame_pattern)  # a pattern path: the folder read with that pattern
        rows.append(_Row(where, video, d["label"],
                         d.get("num_frames", ""), d.get("event_start", ""), d.get("event_end", ""),
                         d.get("frame_scores", ""), extra=extra))
    return _build(rows, file=path, classes=classes, cache_path=path + ".frames.json", probe=probe,
                  probe_fn=probe_fn, num_workers=num_workers, progress=progress, on_bad_video=on_bad_video,
                  csv_dir=csv_dir, allow_repeats=allow_repeats, encoding=encoding)


def _list_rows(path: str, root: Optional[str], encoding: Optional[str], fields: int, layout: str,
               frame_pattern: Optional[str] = None) -> List[_Row]:
    """Rows of a space-separated list: ``path label`` (``fields=2``; the path may hold spaces: the label is the
    last field) or ``frame_dir total_frames label`` (``fields=3``)."""
    path = _require_file(path, f"{layout} file")
    root = os.path.dirname(os.path.abspath(path)) if root is None else os.path.abspath(os.fspath(root))
    rows = []
    for where, parts, line in _split_lines(path, encoding):
        if "," in line and len(parts) < fields:
            raise ManifestError(f"{where}: {line.strip()!r} holds commas: this reads {layout} lines, and a file with "
                                f"commas is a CSV manifest; {_FORMAT_HELP}")
        if fields == 2:
            split = line.strip().rsplit(None, 1)
            if len(split) != 2:
                raise ManifestError(f"{where}: expected '<path> <label>', got {line.strip()!r}; add the label "
                                    "(a class index or name) after a space")
            video, label, count = split[0], split[1], ""
        else:
            if len(parts) != 3:
                raise ManifestError(f"{where}: expected '<frame_dir> <total_frames> <label>', got {line.strip()!r} "
                                    "(MMAction2 rawframe list; multi-label and offset lists are not read)")
            video, count, label = parts
        full = _join(root, video)
        if frame_pattern is not None and os.path.isdir(full):
            full = os.path.join(full, frame_pattern)
        rows.append(_Row(where, full, label, count))
    return rows


def read_video_list(path, root=None, classes=None, probe: bool = True, *, probe_fn=None,
                    num_workers: Optional[int] = None, progress: Optional[bool] = None,
                    on_bad_video: str = "raise", allow_repeats: bool = False,
                    encoding: Optional[str] = None) -> VideoManifest:
    """A space-separated list of ``path label`` lines, no header (PyTorchVideo ``LabeledVideoPaths.from_csv``,
    MMAction2 ``VideoDataset`` annotation files).

    >>> m = read_video_list("train_list_videos.txt", root="videos/")   # doctest: +SKIP

    ``path`` is relative to ``root`` (default: the list's folder; MMAction2's ``data_prefix``) or absolute, and
    may hold spaces (the label is the last field). ``label``: a class index (as both libraries write it) or a
    class name; with indices and no ``classes`` the classes are "0" … the largest index.
    """
    rows = _list_rows(path, root, encoding, 2, "video_list ('path label')")
    return _build(rows, file=os.fspath(path), classes=classes, cache_path=os.fspath(path) + ".frames.json",
                  probe=probe, probe_fn=probe_fn, num_workers=num_workers, progress=progress,
                  on_bad_video=on_bad_video, csv_dir=None, allow_repeats=allow_repeats, encoding=encoding)


def read_rawframe_list(path, root=None, classes=None, probe: bool = True, *, probe_fn=None,
                       num_workers: Optional[int] = None, progress: Optional[bool] = None,
                       on_bad_video: str = "raise", allow_repeats: bool = False,
                       frame_pattern: Optional[str] = None, encoding: Optional[str] = None) -> VideoManifest:
    """An MMAction2 rawframe list: ``frame_dir total_frames label`` lines, no header (``RawframeDataset``).

    >>> m = read_rawframe_list("train_list_rawframes.txt", root="rawframes/")   # doctest: +SKIP

    ``frame_dir`` is a folder of frame images relative to ``root`` (default: the list's folder). Its frames
    are read as :mod:`lightning_temporal.data.frames` says; a folder that also holds optical flow
    (``flow_x_*``) needs ``frame_pattern``, e.g. ``"img_{:05d}.jpg"`` (MMAction2's ``filename_tmpl``).
    ``total_frames`` is a claim checked against the folder like a CSV's ``num_frames``.
    """
    if frame_pattern is not None:
        from lightning_temporal.data.frames import check_frame_pattern  # local: keeps manifest import light

        check_frame_pattern(frame_pattern)
    rows = _list_rows(path, root, encoding, 3, "rawframe_list ('frame_dir total_frames label')", frame_pattern)
    return _build(rows, file=os.fspath(path), classes=classes, cache_path=os.fspath(path) + ".frames.json",
                  probe=probe, probe_fn=probe_fn, num_workers=num_workers, progress=progress,
                  on_bad_video=on_bad_video, csv_dir=None, allow_repeats=allow_repeats, encoding=encoding)


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


def read_class_folders(root, classes=None, probe: bool = True, *, probe_fn=None,
                       num_workers: Optional[int] = None, progress: Optional[bool] = None,
                       on_bad_video: str = "raise", allow_repeats: bool = False,
                       extensions: Sequence[str] = VIDEO_EXTENSIONS, encoding: Optional[str] = None) -> VideoManifest:
    """A class-folder tree ``root/<class>/<video>`` (PyTorchVideo ``LabeledVideoPaths.from_directory``,
    lightning-flash ``from_folders``): the classes are the sub-folders of ``root``, sorted by name, and a
    video's label is its class folder's index in that order.

    >>> m = read_class_folders("videos/train")   # doctest: +SKIP

    Inside a class folder, every file whose name ends in one of ``extensions`` (any case; searched in
    sub-folders too, in sorted order) is a video, and so is every folder that holds frame images and no
    sub-folder (a rawframes tree ``root/<class>/<video>/img_00001.jpg``). Other files are left out with one
    warning naming them. ``classes`` (names, or a file): a class list to follow instead of the folder order
    (every folder must be in it). Rows are named ``<root>, <class>/<video>`` in errors.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise ManifestFileNotFoundError(f"{root}: class-folder root not found; give the folder that holds one "
                                        "sub-folder per class (root/<class>/<video>)")
    from lightning_temporal.data.frames import IMAGE_EXTENSIONS  # local: keeps manifest import light

    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not class_dirs:
        raise ManifestError(f"{root}: no class folders; this layout is root/<class>/<video> (one sub-folder per "
                            f"class); {_FORMAT_HELP}")
    rows, other = [], []
    for name in class_dirs:
        for folder, dirs, files in os.walk(os.path.join(root, name), followlinks=True):
            dirs.sort()
            images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
            if images and not dirs and not any(f.lower().endswith(exts) for f in files):
                rows.append(_Row(f"{root}, {os.path.relpath(folder, root)}", folder, name))
                continue
            for f in sorted(files):
                full = os.path.join(folder, f)
                if f.lower().endswith(exts):
                    rows.append(_Row(f"{root}, {os.path.relpath(full, root)}", full, name))
                elif not f.startswith("."):
                    other.append(os.path.relpath(full, root))
    loose = sorted(e.name for e in os.scandir(root) if e.is_file() and not e.name.startswith("."))
    if other or loose:
        listed = (other + [f"{f} (not in a class folder)" for f in loose])
        warnings.warn(f"{root}: {len(listed)} file(s) left out, not videos ({'/'.join(exts)}) in a class folder: "
                      f"{', '.join(listed[:5])}{' ...' if len(listed) > 5 else ''}")
    if not rows:
        raise ManifestError(f"{root}: the class folders ({', '.join(class_dirs[:5])}) hold no video "
                            f"({'/'.join(exts)}); put the videos in root/<class>/ or pass extensions=")
    names = _load_class_list(classes, encoding) if classes is not None else class_dirs
    return _build(rows, file=root, classes=names, cache_path=os.path.join(root, "class_folders.frames.json"),
                  probe=probe, probe_fn=probe_fn, num_workers=num_workers, progress=progress,
                  on_bad_video=on_bad_video, csv_dir=None, allow_repeats=allow_repeats)


read_csv_manifest.__doc__ += _COMMON_DOC


def read_ucf101_split(root, split_dir, split: int = 1, train: bool = True, probe: bool = True, *, probe_fn=None,
                      num_workers: Optional[int] = None, progress: Optional[bool] = None,
                      on_bad_video: str = "raise", allow_repeats: bool = False,
                      encoding: Optional[str] = None) -> VideoManifest:
    """UCF101 from its official split files in ``split_dir``: ``classInd.txt`` ("1 ApplyEyeMakeup"),
    ``trainlist0{split}.txt`` ("Class/v_x.avi 1", 1-based class index) and ``testlist0{split}.txt``
    ("Class/v_x.avi", class from the folder). Videos lie under ``root/Class/``. Labels are 0-based.

    >>> m = read_ucf101_split("UCF-101", "ucfTrainTestlist", split=1)   # doctest: +SKIP
    """
    check_choice("split", split, (1, 2, 3), hint="UCF101 has splits 1, 2, 3")
    split_dir, root = os.fspath(split_dir), os.path.abspath(os.fspath(root))
    class_file = _require_file(os.path.join(split_dir, "classInd.txt"), "UCF101 class list classInd.txt")
    names: Dict[int, str] = {}
    for where, parts, line in _split_lines(class_file, encoding):
        if len(parts) != 2 or not parts[0].isdigit():
            raise ManifestError(f"{where}: expected '<index> <ClassName>', got {line.strip()!r}")
        names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ManifestError(f"{class_file}: class indices must run 1..{len(names)} without gaps")
    class_names = [names[k] for k in range(1, len(names) + 1)]
    lookup = {c: k for k, c in enumerate(class_names)}
    list_file = _require_file(os.path.join(split_dir, f"{'train' if train else 'test'}list0{split}.txt"),
                              "UCF101 split list")
    rows = []
    for where, parts, line in _split_lines(list_file, encoding):
        if len(parts) != (2 if train else 1):
            raise ManifestError(f"{where}: expected {'Class/video.avi <index>' if train else 'Class/video.avi'}"
                                f", got {line.strip()!r}")
        folder = parts[0].replace("\\", "/").split("/")[0]
        if folder not in lookup:
            raise ManifestError(f"{where}: class folder {folder!r} is not in {class_file}; fix the line")
        label = lookup[folder]
        if train:
            k = _parse_count(parts[1], "class index", where, 1)
            if k > len(class_names):
                raise ManifestError(f"{where}: class index {k} is outside 1..{len(class_names)}")
            if k - 1 != label:
                raise ManifestError(f"{where}: class index {k} ({class_names[k - 1]}) disagrees with the "
                                    f"folder {folder!r}; fix the line")
        rows.append(_Row(where, _join(root, parts[0]), str(label)))
    return _build(rows, file=list_file, classes=class_names, cache_path=list_file + ".frames.json",
                  probe=probe, probe_fn=probe_fn, num_workers=num_workers, progress=progress,
                  on_bad_video=on_bad_video, csv_dir=None, allow_repeats=allow_repeats)


def read_hmdb51_split(root, split_dir, split: int = 1, train: bool = True, probe: bool = True, *, probe_fn=None,
                      num_workers: Optional[int] = None, progress: Optional[bool] = None,
                      on_bad_video: str = "raise", allow_repeats: bool = False,
                      encoding: Optional[str] = None) -> VideoManifest:
    """HMDB51 from its split files ``split_dir/<class>_test_split{split}.txt`` with lines "video.avi 0|1|2"
    (1 = train, 2 = test, 0 = unused). Videos lie under ``root/<class>/``. Classes sorted by name.

    >>> m = read_hmdb51_split("hmdb51", "testTrainMulti_7030_splits", train=False)   # doctest: +SKIP
    """
    check_choice("split", split, (1, 2, 3), hint="HMDB51 has splits 1, 2, 3")
    split_dir, root = os.fspath(split_dir), os.path.abspath(os.fspath(root))
    if not os.path.isdir(split_dir):
        raise ManifestFileNotFoundError(f"{split_dir}: HMDB51 split folder not found; check the path")
    suffix = f"_test_split{split}.txt"
    files = sorted(f for f in os.listdir(split_dir) if f.endswith(suffix))
    if not files:
        raise ManifestFileNotFoundError(f"{split_dir}: no '<class>{suffix}' files; pass the folder of the "
                                        "HMDB51 split files")
    class_names = [f[: -len(suffix)] for f in files]
    wanted = "1" if train else "2"
    rows = []
    for label, (name, fname) in enumerate(zip(class_names, files)):
        for where, parts, line in _split_lines(os.path.join(split_dir, fname), encoding):
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ManifestError(f"{where}: expected '<video>.avi 0|1|2', got {line.strip()!r}")
            if parts[1] == wanted:
                rows.append(_Row(where, _join(root, os.path.join(name, parts[0])), str(label)))
    cache = os.path.join(split_dir, f"hmdb51_split{split}_{'train' if train else 'test'}.frames.json")
    return _build(rows, file=split_dir, classes=class_names, cache_path=cache, probe=probe, probe_fn=probe_fn,
                  num_workers=num_workers, progress=progress, on_bad_video=on_bad_video, csv_dir=None,
                  allow_repeats=allow_repeats)


KINETICS_SPLITS = {"train": ("train", "training"), "val": ("val", "validate", "validation"),
                   "test": ("test", "testing")}


def read_kinetics_csv(path, root, classes=None, split: Optional[str] = None, probe: bool = True, *, probe_fn=None,
                      num_workers: Optional[int] = None, progress: Optional[bool] = None,
                      on_bad_video: str = "raise", allow_repeats: bool = False,
                      encoding: Optional[str] = None) -> VideoManifest:
    """Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split``; extra columns ignored).

    Files are ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` under ``root/<label>/`` (the label as
    written or with spaces as underscores) or directly under ``root``; both layouts are looked up per row.
    ``split`` (``train``, ``val`` / ``validate`` / ``validation``, ``test``) keeps only the rows of that split
    when the CSV has a ``split`` column (one CSV for every split); a CSV without the column is one split's file
    and is read whole. Classes: the sorted label names unless ``classes`` is given. A test CSV without labels
    (``label`` column absent) cannot be read: it has nothing to evaluate against.

    >>> m = read_kinetics_csv("kinetics400/train.csv", "kinetics400/train", on_bad_video="skip")  # doctest: +SKIP
    """
    path = _require_file(path, "Kinetics CSV")
    if root is None:
        raise ManifestError(f"{path}: the Kinetics videos' folder is not given; pass root= (TemporalDataModule: "
                            "data.data_root, the folder with <label>/<youtube_id>_<start>_<end>.mp4)")
    root = os.path.abspath(os.fspath(root))
    wanted = None
    if split is not None:
        key = next((k for k, names in KINETICS_SPLITS.items() if str(split).strip().lower() in names), None)
        if key is None:
            raise ValueError(f"split={split!r}; one of {sorted({n for v in KINETICS_SPLITS.values() for n in v})}")
        wanted = KINETICS_SPLITS[key]
    rows, seen_splits = [], set()
    reader = csv.reader(io.StringIO(read_text(path, encoding), newline=""))
    header = [h.strip() for h in (next(reader, None) or [])]
    need = ("label", "youtube_id", "time_start", "time_end")
    if any(h not in header for h in need):
        raise ManifestError(f"{path}, row 1: header {header} lacks one of {list(need)}; this reader takes "
                            "the Kinetics layout label,youtube_id,time_start,time_end,split")
    for values in reader:
        if not values or all(not v.strip() for v in values):
            continue
        where = _where(path, reader.line_num)
        if len(values) != len(header):
            raise ManifestError(f"{where}: {len(values)} columns but the header has {len(header)}; fix the row")
        d = dict(zip(header, (v.strip() for v in values)))
        if wanted is not None and "split" in d:
            seen_splits.add(d["split"])
            if d["split"].lower() not in wanted:
                continue
        t0 = _parse_count(d["time_start"], "time_start", where, 0)
        t1 = _parse_count(d["time_end"], "time_end", where, 0)
        if t0 is None or t1 is None:
            raise ManifestError(f"{where}: time_start/time_end empty; give both as whole seconds")
        fname = f"{d['youtube_id']}_{t0:06d}_{t1:06d}.mp4"
        candidates = [os.path.join(root, d["label"], fname), os.path.join(root, d["label"].replace(" ", "_"),
                                                                          fname), os.path.join(root, fname)]
        found = [c for c in candidates if os.path.exists(c)] or candidates
        rows.append(_Row(where, found[0], d["label"], alternatives=tuple(dict.fromkeys(found[1:]))))
    if not rows and seen_splits:
        raise ManifestError(f"{path}: no row of split {split!r} (its split column holds {sorted(seen_splits)}); "
                            "give this split's CSV, or check the split name")
    return _build(rows, file=path, classes=classes, cache_path=path + (f".{split}" if split and seen_splits else "")
                  + ".frames.json", probe=probe, probe_fn=probe_fn, num_workers=num_workers, progress=progress,
                  on_bad_video=on_bad_video, csv_dir=None, allow_repeats=allow_repeats, encoding=encoding)


_READERS = {"csv": read_csv_manifest, "video_list": read_video_list, "rawframe_list": read_rawframe_list,
            "folders": read_class_folders, "kinetics": read_kinetics_csv}


def read_manifest(source, format: str = "csv", **kwargs) -> VideoManifest:
    """Read ``source`` in one of the layouts of :data:`MANIFEST_FORMATS` (``ucf101`` / ``hmdb51`` take their
    own split arguments: use :func:`read_ucf101_split` / :func:`read_hmdb51_split`).

    >>> m = read_manifest("videos/train", format="folders")              # doctest: +SKIP
    >>> m = read_manifest("train_list.txt", format="video_list", root="videos")   # doctest: +SKIP

    ``kwargs`` go to the reader: :func:`read_csv_manifest` (``csv``), :func:`read_video_list`,
    :func:`read_rawframe_list`, :func:`read_class_folders` (``folders``, ``source`` is the root folder),
    :func:`read_kinetics_csv` (``kinetics``, needs ``root``).
    """
    check_choice("format", format, tuple(_READERS), hint="ucf101/hmdb51: read_ucf101_split / read_hmdb51_split")
    if format == "kinetics":
        return read_kinetics_csv(source, kwargs.pop("root", None), **kwargs)
    return _READERS[format](source, **kwargs)


for _f in (read_ucf101_split, read_hmdb51_split, read_kinetics_csv, read_video_list, read_rawframe_list,
           read_class_folders):
    _f.__doc__ += _COMMON_DOC

