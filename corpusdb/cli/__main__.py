"""`python -m corpusdb.cli ...` (and `torchrun -m corpusdb.cli score ...`) runs the command line."""

from corpusdb.cli import main

main()
