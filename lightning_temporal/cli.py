"""``lightning-temporal``: LightningCLI over :class:`VideoClassifier` and :class:`TemporalDataModule`.

    lightning-temporal fit --config recipes/quickstart.yaml
    lightning-temporal test --config recipes/quickstart.yaml --ckpt_path last
    lightning-temporal predict --config recipes/quickstart.yaml --ckpt_path best

``--ckpt_path last`` / ``best`` name a checkpoint of the newest training run of the same config (the run
folders its logger and ``ModelCheckpoint`` write, e.g. ``outputs/quickstart/logs/version_0/checkpoints``).
``test`` / ``validate`` / ``predict`` from a training run's checkpoint log inside that run
(``<run>/test/version_N``), so evaluations never add ``version_N`` folders beside the training runs.
"""
from __future__ import annotations

import difflib
import glob
import importlib
import inspect
import os
import re
import sys
import traceback
import warnings
from argparse import ArgumentError
from typing import Any, List, Optional, Tuple

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_temporal.callbacks.prediction_writer import PredictionWriter
from lightning_temporal.datamodule import TemporalDataModule
from lightning_temporal.module import VideoClassifier

__all__ = ["TemporalCLI", "ConfigError", "CheckpointError", "check_checkpoint", "resolve_checkpoint", "run", "main"]

_EVALUATIONS = ("validate", "test", "predict")
_SUBCOMMANDS = ("fit",) + _EVALUATIONS
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class ConfigError(ValueError):
    """A configuration the CLI cannot run, explained (the key, what is wrong, what is allowed)."""


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint); the message names it."""


def _unreadable(path: str) -> Optional[str]:
    """Why the checkpoint ``path`` cannot be read, or None when it can. A checkpoint torch saves is a zip archive:
    its directory sits at the end (a file cut short by a killed run or a full disk has none) and every member's
    CRC is checked (bytes damaged inside). Other files are loaded on the CPU to see."""
    import zipfile

    try:
        size = os.path.getsize(path)
    except OSError as err:
        return f"cannot access it ({err.strerror or err})"
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped and not zipfile.is_zipfile(path):
        return f"the archive ends after {size} bytes without its directory (the file is cut short)"
    if zipped:
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
            return f"the archive is damaged ({err})"
        return None if broken is None else f"member {broken} is damaged (CRC mismatch)"
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)  # tensors only: nothing of the file is executed
    except Exception as err:  # any failure to load is what this reports
        if "Weights only load failed" in str(err):
            return None  # whole, but holds objects besides tensors: the loader's own rules decide
        return f"it is not a complete checkpoint ({type(err).__name__}: {str(err)[:200]})"
    return None


def check_checkpoint(path: str) -> str:
    """Return ``path`` when it is a readable checkpoint file; raise :class:`CheckpointError` naming it, what is
    wrong and what to do (a file cut short by a killed run or a full disk: use an older checkpoint)."""
    why = _unreadable(path)
    if why is not None:
        folder = os.path.dirname(os.path.abspath(path))
        raise CheckpointError(f"{path}: the checkpoint cannot be read: {why}. It was probably cut short (a run killed "
                              "or a disk full while it was written); give --ckpt_path an older checkpoint of "
                              f"{folder}, or --ckpt_path last (it skips unreadable files), or delete this file")
    return path


# ----------------------------------------------------------------------------------- finding training runs
def _get(ns: Any, key: str, default=None):
    if ns is None:
        return default
    return ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _is(entry: Any, base: type) -> bool:
    cls = _import(_get(entry, "class_path", "") or "")
    return isinstance(cls, type) and issubclass(cls, base)


def _checkpoint_dirs(trainer_cfg: Any) -> Tuple[List[str], str]:
    """Checkpoint folders of the training runs of a config, newest run first, and where that was looked for.

    Follows Lightning's layout: a ``ModelCheckpoint`` ``dirpath`` when given; else
    ``<save_dir>/<name>/version_N/checkpoints`` of the first CSV / TensorBoard logger (``version`` if fixed);
    ``<default_root_dir>/lightning_logs/version_N/checkpoints`` for the default logger;
    ``<default_root_dir>/checkpoints`` without a logger.
    """
    root = _get(trainer_cfg, "default_root_dir") or os.getcwd()
    for cb in _get(trainer_cfg, "callbacks") or []:
        dirpath = _get(_get(cb, "init_args"), "dirpath")
        if _is(cb, ModelCheckpoint) and dirpath:
            return [str(dirpath)], str(dirpath)
    logger = _get(trainer_cfg, "logger")
    if logger is False:
        path = os.path.join(root, "checkpoints")
        return [path], path
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    if logger is None or logger is True:
        save_dir, name, version = root, "lightning_logs", None
    elif _is(logger, (CSVLogger, TensorBoardLogger)):
        args = _get(logger, "init_args")
        save_dir = _get(args, "save_dir") or root
        name, version = _get(args, "name", "lightning_logs"), _get(args, "version")
    else:
        raise ConfigError(f"cannot tell where the training runs of logger {_get(logger, 'class_path')!r} keep "
                          "their checkpoints; give --ckpt_path the checkpoint file (or set the ModelCheckpoint's "
                          "dirpath)")
    base = os.path.join(str(save_dir), str(name)) if name else str(save_dir)
    if version is not None:
        run = version if isinstance(version, str) else f"version_{version}"
        path = os.path.join(base, run, "checkpoints")
        return [path], path
    runs = [d for d in glob.glob(os.path.join(base, "version_*")) if re.fullmatch(r"version_\d+", os.path.basename(d))]
    runs.sort(key=lambda d: int(os.path.basename(d)[len("version_"):]), reverse=True)
    return [os.path.join(d, "checkpoints") for d in runs], os.path.join(base, "version_*", "checkpoints")


def _best_of(ckpt_dir: str, files: List[str]) -> str:
    """The best checkpoint a run's ``ModelCheckpoint`` recorded (read from its newest readable checkpoint)."""
    import torch

    state, skipped = None, []
    for newest in sorted(files, key=os.path.getmtime, reverse=True):
        if _unreadable(newest) is None:
            state = torch.load(newest, map_location="cpu", weights_only=True, mmap=True).get("callbacks", {})
            break
        skipped.append(f"{newest} ({_unreadable(newest)})")
    if state is None:
        raise CheckpointError(f"--ckpt_path best: the checkpoints of the training run in {os.path.dirname(ckpt_dir)} "
                              f"cannot be read: {'; '.join(skipped)}. They were cut short (a run killed or a disk "
                              "full while writing); train again, or give --ckpt_path a checkpoint file that is intact")
    recorded = [(s.get("monitor"), s.get("best_model_path")) for k, s in state.items()
                if k.startswith("ModelCheckpoint") and isinstance(s, dict) and s.get("monitor")]
    best = next((path for _, path in recorded if path), None)
    if best is None:
        monitors = ", ".join(m for m, _ in recorded) or "none"
        raise ConfigError(f"--ckpt_path best: the training run in {os.path.dirname(ckpt_dir)} recorded no best "
                          f"checkpoint (monitored metrics: {monitors}; it may not have validated yet); use "
                          "--ckpt_path last or a checkpoint file")
    for candidate in (best, os.path.join(ckpt_dir, os.path.basename(best))):  # the run may have used another cwd
        if os.path.isfile(candidate):
            why = _unreadable(candidate)
            if why is not None:
                raise CheckpointError(f"--ckpt_path best: {candidate}, the best checkpoint the run recorded, cannot be "
                                      f"read: {why}; use --ckpt_path last or another checkpoint file of {ckpt_dir}")
            return candidate
    raise ConfigError(f"--ckpt_path best: the training run recorded {best}, which no longer exists")


def resolve_checkpoint(which: str, trainer_cfg: Any) -> str:
    """The checkpoint file ``last`` or ``best`` names for a config: in the newest training run that holds a
    checkpoint, ``last*.ckpt`` (the newest readable one: a newer file that cannot be read, cut short by a
    killed run or a full disk, is skipped with a warning naming it) or the best checkpoint its
    ``ModelCheckpoint`` recorded.

    Raises:
        ConfigError: no training run with a checkpoint (the message names the folders searched), or the run
            has no ``last`` / ``best`` checkpoint.
        CheckpointError: every candidate checkpoint is unreadable, or the recorded best one is.
    """
    if which not in ("last", "best"):
        raise ValueError(f"which={which!r}; 'last' or 'best' is allowed")
    dirs, pattern = _checkpoint_dirs(trainer_cfg)
    for ckpt_dir in dirs:
        files = glob.glob(os.path.join(ckpt_dir, "*.ckpt"))
        if not files:
            continue
        if which == "best":
            return _best_of(ckpt_dir, files)
        lasts = [f for f in files if os.path.basename(f).startswith("last")]
        if not lasts:
            raise ConfigError(f"--ckpt_path last: the newest training run ({os.path.dirname(ckpt_dir)}) has no "
                              f"last*.ckpt, only {', '.join(sorted(map(os.path.basename, files)))}; give one of "
                              "them to --ckpt_path, or add ModelCheckpoint(filename='last') to the recipe")
        skipped = []
        for candidate in sorted(lasts, key=os.path.getmtime, reverse=True):
            why = _unreadable(candidate)
            if why is None:
                if skipped:
                    warnings.warn(f"--ckpt_path last: {'; '.join(skipped)}; using the newest readable one, "
                                  f"{candidate}", UserWarning)
                return candidate
            skipped.append(f"{candidate} cannot be read ({why})")
        raise CheckpointError(f"--ckpt_path last: no last*.ckpt of the training run in {os.path.dirname(ckpt_dir)} "
                              f"can be read: {'; '.join(skipped)}. They were cut short (a run killed or a disk full "
                              "while writing); give --ckpt_path another checkpoint file, or train again")
    seen = ", ".join(os.path.basename(os.path.dirname(d)) for d in dirs[:5]) or "no run folder"
    raise ConfigError(f"--ckpt_path {which}: no checkpoint of a training run of this config; looked in {pattern} "
                      f"({seen}). Train first (lightning-temporal fit --config <the same config>) or give "
                      "--ckpt_path a checkpoint file")


# ---------------------------------------------------------------------------------------- error messages
def _own_error(err: BaseException) -> Optional[BaseException]:
    """The innermost exception in ``err``'s chain raised by this package (not by the CLI glue), if any."""
    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ is not None else []
        if frames and os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIR) \
                and os.path.abspath(frames[-1].filename) != os.path.abspath(__file__):
            found = err
        err = err.__cause__ or err.__context__
    return found


def _init_params(cls) -> List[str]:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _suggest(word: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _subcommand_options(parser, args: Optional[List[str]]) -> List[str]:
    action = getattr(parser, "_subcommands_action", None)
    choices = getattr(action, "choices", {}) or {}
    sub = next((a for a in (args or sys.argv[1:]) if a in choices), None)
    sub_parser = choices.get(sub, parser)
    return [s for a in sub_parser._actions for s in a.option_strings if s.startswith("--")]


def explain_argument_error(message: str, parser, args: Optional[List[str]] = None) -> str:
    """One line that says which key is wrong and what is allowed, from a jsonargparse error message."""
    key = re.search(r'Parser key "([^"]+)"', message)
    prefix = key[1] if key else ""
    option = re.search(r"class_path '([\w.]+)'[^\n]*\n\s*Option '([^']+)' is not accepted", message)
    if option:
        cls = _import(option[1])
        params = _init_params(cls) if cls is not None else []
        name = getattr(cls, "__name__", option[1])
        where = f"{prefix}.init_args.{option[2]}" if prefix else option[2]
        hint = _suggest(option[2], params) or (f"; its arguments: {', '.join(params)}" if params else "")
        return f"{where}: {name} has no argument {option[2]!r}{hint}"
    options = _subcommand_options(parser, args)
    unknown = re.search(r"unrecognized arguments: (.+)", message)
    if unknown:
        parts = []
        for token in unknown[1].split():
            flag = token.split("=", 1)[0]
            hint = _suggest(flag, options).replace("'", "") if flag.startswith("--") else ""
            parts.append(f"unknown option {flag}{hint}")
        return "; ".join(parts) + " (lightning-temporal <subcommand> --help lists the options)"
    refused = re.search(r"does not accept option '([^']+)'", message)
    if refused:  # a key of a config file
        keys = [o[2:] for o in options]
        hint = _suggest(refused[1], keys)
        if not hint:
            head = refused[1].split(".")[0]
            hint = _suggest(head, sorted({k.split(".")[0] for k in keys}))
        return f"unknown key {refused[1]!r} in the config{hint}"
    given = re.search(r"Given value: (.+)", message)
    expected = list(dict.fromkeys(re.findall(r"Expected a <class '(\w+)'>", message)))
    if prefix and expected:
        value = given[1] if given else "the given value"
        return f"{prefix}: {value!r} is not valid; expected {' or '.join(expected)}"
    text = re.sub(r'Parser key "[^"]+":\s*', "", message)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    body = " ".join(lines[:2]) if lines else message
    return f"{prefix}: {body}" if prefix else body


# ------------------------------------------------------------------------------------------------- the CLI
class TemporalCLI(LightningCLI):
    """LightningCLI over :class:`VideoClassifier` and :class:`TemporalDataModule` (subclasses allowed through
    ``class_path``).

    * ``fit --test_after_fit true`` also tests the best checkpoint (of the ``ModelCheckpoint`` that monitors a
      metric; the last weights when none does) on the data module's test split.
    * ``--ckpt_path last`` / ``best`` resolve to the newest training run of the same config
      (:func:`resolve_checkpoint`); ``test`` / ``validate`` / ``predict`` from a run's checkpoint log inside
      that run.
    * ``predict`` writes its predictions with a :class:`PredictionWriter` (added when the config has none) and
      prints where.
    * Configuration errors come out as :class:`ConfigError` with the key, what is wrong, and a close match
      for a misspelled key.
    """

    def __init__(self, *args, **kwargs):
        self._resolved_from: Optional[str] = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, evaluate the best checkpoint on the test split")

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(explain_argument_error(str(err), parser, args)) from None

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        if sub in _SUBCOMMANDS:
            cfg = self.config[sub]
            which = cfg.get("ckpt_path")
            if which in ("last", "best"):
                try:
                    cfg.ckpt_path = resolve_checkpoint(which, cfg.get("trainer"))
                    self._resolved_from = which
                except CheckpointError:
                    raise
                except ConfigError:
                    if sub != "fit":
                        raise
                    # fit --ckpt_path last before any run: start fresh, as Lightning does
            elif isinstance(which, (str, os.PathLike)) and os.path.isfile(which):
                check_checkpoint(os.fspath(which))  # named here, not as an OSError deep inside the loader
            if sub in _EVALUATIONS:
                self._log_inside_training_run(sub, cfg)
        super()._parse_ckpt_path()

    def _log_inside_training_run(self, sub: str, cfg) -> None:
        """Point the logger of an evaluation at ``<run>/<sub>/`` for a checkpoint ``<run>/checkpoints/x.ckpt``,
        else at ``<save_dir>/<name>/<sub>/``: never a new ``version_N`` beside the training runs."""
        ckpt = cfg.get("ckpt_path")
        if ckpt is None:
            warnings.warn(f"{sub} without --ckpt_path runs the model as the config builds it (initial weights, or "
                          "backbone_kwargs.pretrained); give --ckpt_path last, best or a checkpoint file to "
                          "evaluate a training run", UserWarning)
        ckpt_dir = os.path.dirname(os.path.abspath(str(ckpt))) if ckpt is not None else ""
        run_dir = os.path.dirname(ckpt_dir) if os.path.basename(ckpt_dir) == "checkpoints" else None
        trainer = cfg.get("trainer")
        logger = trainer.get("logger")
        first = logger[0] if isinstance(logger, list) and logger else logger
        if first is not None and not isinstance(first, bool) and _is(first, (CSVLogger, TensorBoardLogger)):
            args = first.get("init_args")
            base = run_dir or os.path.join(str(args.get("save_dir") or trainer.get("default_root_dir") or "."),
                                           str(args.get("name") or ""))
            args.save_dir, args.name, args.version = base, sub, None
        elif first is None or isinstance(first, bool):  # Lightning's default logger (or none): default_root_dir
            trainer.default_root_dir = os.path.join(run_dir or trainer.get("default_root_dir") or ".", sub)

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        if sub in _SUBCOMMANDS and self._resolved_from is not None:
            rank_zero_info(f"--ckpt_path {self._resolved_from}: {self.config[sub].get('ckpt_path')}")

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand not in _EVALUATIONS:
            return super()._run_subcommand(subcommand)
        with warnings.catch_warnings():
            # the training run's ModelCheckpoint states are left out on purpose (see _drop_checkpointing)
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to "
                                                      r"create the checkpoint need to be provided")
            return super()._run_subcommand(subcommand)

    def _drop_checkpointing(self) -> None:
        # An evaluation saves nothing; restoring a training run's ModelCheckpoint state into one that resolved
        # another folder only warns that the folder changed.
        self.trainer.callbacks = [cb for cb in self.trainer.callbacks if not isinstance(cb, ModelCheckpoint)]

    def before_validate(self) -> None:
        self._drop_checkpointing()

    def before_test(self) -> None:
        self._drop_checkpointing()

    def before_predict(self) -> None:
        self._drop_checkpointing()
        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

    def after_predict(self) -> None:
        writer = next(cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter))
        if self.trainer.is_global_zero and writer.path:
            print(f"predictions: {writer.path}")

    def after_fit(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        if not config.get("test_after_fit", False) or self.trainer.fast_dev_run:
            return
        monitoring = [cb for cb in self.trainer.checkpoint_callbacks
                      if isinstance(cb, ModelCheckpoint) and cb.monitor is not None]
        best = monitoring[0].best_model_path if monitoring else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def run(args: Optional[List[str]] = None) -> TemporalCLI:
    """Run the CLI on ``args`` (default: the command line) and return it (its trainer, model, data).

    Raises:
        ConfigError (a ``ValueError``): an option or value the CLI does not accept, explained.
        ValueError, TypeError, FileNotFoundError: this package's own validation error (unwrapped from
            jsonargparse's report), naming the key and what is allowed.
    """
    no_exit = {"exit_on_error": False}
    try:
        return TemporalCLI(VideoClassifier, TemporalDataModule, subclass_mode_model=True, subclass_mode_data=True,
                           save_config_kwargs={"overwrite": True}, args=args, auto_configure_optimizers=False,
                           parser_kwargs={**no_exit, **{s: dict(no_exit) for s in _SUBCOMMANDS}})
    except (ValueError, TypeError, FileNotFoundError) as err:
        own = _own_error(err)
        if own is not None and own is not err:
            raise own from None
        raise


def main() -> None:
    """The ``lightning-temporal`` console script: exit status 0 on success, 2 with a message on a bad config
    (it fails before training; the first line names the key, what is wrong and what is allowed)."""
    # Lightning's own use of a torch pytree API deprecated in this torch: nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    try:
        run()
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"lightning-temporal: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
