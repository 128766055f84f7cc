"""`corpusdb.train`: the training adapter (`ViewDataset`), the student pre-training loop, the MiniPLM
experiment and the demo. The source lives in `train/` beside `corpusdb/`; it installs as `corpusdb.train`.

    from corpusdb.train import ViewDataset
"""

from corpusdb.train.dataset import Blocks, ViewDataset
from corpusdb.world import World

__all__ = ["Blocks", "ViewDataset", "World"]
