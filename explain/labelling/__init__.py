"""Pre-labelling an unlabelled image collection, each label with its explanation.

`label_collection` reads a folder tree, a text file of paths or a CSV with
a `path` column, scores every image as its `LabelRecipe` says, and writes
one row per image: the label, its probability, the top K with scores, the
template baseline's label, the margin to the runner-up, and the descriptor
scores of the label and the runner-up. The engines of `engines.ENGINES`
feed one scorer (`scorer.Labeller`): `local` (the DataLoader and embedding
caches of evaluation) and `ray` (Ray Data actors that load the model once
each); the formats are the rows of `outputs.WRITERS`, each with the run's
provenance. Rows are written in small
parts as they are done, so a crash or Ctrl-C loses at most one part and a
re-run labels only what is missing; the final file is assembled from the
parts.
"""

from explain.labelling.engines import ENGINES, EngineOptions, make_engine
from explain.labelling.outputs import FORMATS, WRITERS
from explain.labelling.recipe import LabelRecipe
from explain.labelling.run import RunOptions, label_collection
from explain.labelling.sources import read_sources

__all__ = [
    "ENGINES",
    "FORMATS",
    "WRITERS",
    "EngineOptions",
    "LabelRecipe",
    "RunOptions",
    "label_collection",
    "make_engine",
    "read_sources",
]
