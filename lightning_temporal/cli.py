"""``lightning-temporal``: LightningCLI over :class:`VideoClassifier` and :class:`TemporalDataModule`.

    lightning-temporal fit --config recipes/quickstart.yaml
    lightning-temporal test --config recipes/quickstart.yaml --ckpt_path last
"""
from __future__ import annotations

import sys
from typing import List, Optional

from lightning.pytorch.cli import LightningCLI

from lightning_temporal.datamodule import TemporalDataModule
from lightning_temporal.module import VideoClassifier

__all__ = ["TemporalCLI", "run", "main"]


class TemporalCLI(LightningCLI):
    """LightningCLI over :class:`VideoClassifier` and :class:`TemporalDataModule` (subclasses allowed through
    ``class_path``). ``fit --test_after_fit true`` also tests the best checkpoint (or the last weights when no
    checkpoint callback monitors a metric) on the data module's test split."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, evaluate the best checkpoint on the test split")

    def after_fit(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        if not config.get("test_after_fit", False) or self.trainer.fast_dev_run:
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def run(args: Optional[List[str]] = None) -> TemporalCLI:
    """Run the CLI on ``args`` (default: the command line) and return it (its trainer, model, data)."""
    return TemporalCLI(VideoClassifier, TemporalDataModule, subclass_mode_model=True, subclass_mode_data=True,
                       save_config_kwargs={"overwrite": True}, args=args, auto_configure_optimizers=False)


def main() -> None:
    """The ``lightning-temporal`` console script: exit status 0 on success, 2 with a one-line message on a bad
    config (it fails before training, naming the key and what is allowed)."""
    try:
        run()
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"lightning-temporal: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
