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

__all__ = ["TemporalCLI", "main"]


class TemporalCLI(LightningCLI):
    """LightningCLI whose model and data default to this package's classes (subclasses allowed by
    ``class_path``)."""


def main(args: Optional[List[str]] = None) -> Optional[TemporalCLI]:
    try:
        return TemporalCLI(VideoClassifier, TemporalDataModule, subclass_mode_model=True, subclass_mode_data=True,
                           save_config_kwargs={"overwrite": True}, args=args, auto_configure_optimizers=False)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # bad configs fail before training with the key and what is allowed; no traceback for the user
        if args is not None:
            raise
        print(f"lightning-temporal: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
