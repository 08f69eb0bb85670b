"""Trainyard's trainer side: the ``trainyard-launch`` wrapper around torchrun, checkpointing,
heartbeats and the progress lines that the operator's local runtime parses.

Importing this package does not import torch: the launcher stays light, and only
:mod:`trainyard_trainer.checkpoint` needs it.
"""

__version__ = "0.1.0"

from .contract import HUNG_EXIT_CODE

__all__ = ["HUNG_EXIT_CODE"]
