"""`corpusdb.train.ViewDataset`: stream any view into student pre-training (the adapter lives in `train/`).

    from corpusdb.train import ViewDataset
"""

from corpusdb.world import World
from train.dataset import Blocks, ViewDataset

__all__ = ["Blocks", "ViewDataset", "World"]
