"""`corpusdb.train.ViewDataset`: stream any view into student pre-training (the adapter lives in `train/`).

    from corpusdb.train import ViewDataset
"""

from train.dataset import Blocks, ViewDataset
from train.world import World

__all__ = ["Blocks", "ViewDataset", "World"]
