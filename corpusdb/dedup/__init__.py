"""Near-duplicate detection: MinHash signatures, LSH banding, verified pairs, clusters (components or stars).

    corpusdb minhash demo/db && corpusdb dedup-report demo/db
"""

from corpusdb.dedup.job import MinhashReport, run_minhash
from corpusdb.dedup.minhash import MinHasher

__all__ = ["MinHasher", "MinhashReport", "run_minhash"]
