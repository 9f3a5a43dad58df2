"""What the command line does, as Python functions returning typed summaries (``slimzip.summaries``), and
the config classes whose fields are the commands' knobs.

A run directory (``--out``) holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per
epoch), ``train_state.json`` + ``last.safetensors`` (for resuming), the checkpoint
(``model.safetensors`` + ``model.json``) and ``summary.json``. Running the same command again resumes
an interrupted run, or returns the summary of a finished one without training again.
"""

from ..deep_compression import CompressConfig
from ..searcher import SearchConfig
from ..trainer import TrainConfig
from .common import RECIPES, check_fits, resolve_device
from .deploying import FORMATS, export
from .files import compress, inspect_file, report
from .pruning import METHODS, dropnet, prune_channels
from .searching import ABLATIONS, compare_search, search, search_defaults
from .training import evaluate_path, list_models, train

__all__ = ["ABLATIONS", "FORMATS", "METHODS", "RECIPES", "CompressConfig", "SearchConfig", "TrainConfig", "check_fits",
           "compare_search", "compress", "dropnet", "evaluate_path", "export", "inspect_file", "list_models",
           "prune_channels", "report", "resolve_device", "search", "search_defaults", "train"]
