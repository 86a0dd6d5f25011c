"""hop.model: the HOP gesture model, its audio front end and frozen language model."""

from .checkpoint import (BUILTIN_CHECKPOINTS, DEFAULT_BUILTIN, CheckpointError, load_checkpoint, resolve_checkpoint,
                         save_checkpoint)
from .frontend import MelOptions, StreamingLogMel, log_mel
from .hop import Discriminator, Hop, HopConfig, HopState, Stateful, reset_streams
from .lm import DEFAULT_LM, FrozenLM, LMNotFoundError, load_tokenizer, resolve_lm_path
from .skeleton import TED_EXPRESSIVE, TED_GESTURE, Skeleton, get_skeleton
from .stream import HopStream

__all__ = [
    "BUILTIN_CHECKPOINTS", "DEFAULT_BUILTIN", "CheckpointError", "load_checkpoint", "resolve_checkpoint",
    "save_checkpoint", "MelOptions", "StreamingLogMel", "log_mel",
    "Discriminator", "Hop", "HopConfig", "HopState", "Stateful", "reset_streams", "DEFAULT_LM", "FrozenLM",
    "LMNotFoundError",
    "load_tokenizer", "resolve_lm_path", "TED_EXPRESSIVE", "TED_GESTURE", "Skeleton", "get_skeleton", "HopStream",
]
