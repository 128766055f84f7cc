"""corpusdb's release number (in the export manifests it writes, and `corpusdb --version`)."""

VERSION = "0.1.0"
