"""A model folder, looked at before any library reads it: refused, in one line, for what it lacks.

A folder saved by transformers' `save_pretrained` holds `config.json`, its
weights, its tokenizer's files and its image processor's settings
(`preprocessor_config.json`, or `processor_config.json` from transformers
5); one saved
for open_clip holds `open_clip_config.json` and its weights. Given a folder
that lacks one of these, the libraries fail with messages about something
else ("Unrecognized model", "Repo id must be in the form", "Couldn't
instantiate the backend tokenizer") or, for open_clip, build the model with
random weights and say so only in their log. `check_folder` names what is
missing instead. Names that are not folders (hub ids) pass through.
"""

from __future__ import annotations

from pathlib import Path

from explain.errors import ModelLoadError

WEIGHTS = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
TOKENIZER_FILES = (  # any one of these is a tokenizer transformers can build
    "tokenizer.json",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
)


def looks_like_a_path(name: str) -> bool:
    """A name written as a path ("/models/clip", "./clip", "~/clip"), which no hub id is."""
    return name.startswith(("/", "./", "../", "~")) or (len(name) > 1 and name[1] == ":")


def check_folder(name: str) -> None:
    """Refuse a model folder that lacks something its library needs, or a path that is not there."""
    path = Path(name).expanduser()
    if not path.exists():
        if looks_like_a_path(name):
            raise ModelLoadError(f"cannot load model {name!r}: there is no such folder")
        return  # a hub id
    if not path.is_dir():
        raise ModelLoadError(f"cannot load model {name!r}: it is a file; give the folder that holds the model")
    files = {child.name for child in path.iterdir() if child.is_file()}
    has_weights = any(file.endswith(WEIGHTS) for file in files)
    if "open_clip_config.json" in files:
        return  # open_clip's loader checks the weights itself, with open_clip's own file names
    if "config.json" not in files:
        found = "weights but no" if has_weights else "no model:"
        raise ModelLoadError(
            f"cannot load model {name!r}: the folder holds {found} config.json (a folder saved with "
            "save_pretrained) or open_clip_config.json (an open_clip folder)"
        )
    missing = []
    if not has_weights:
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not any(file in files for file in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, or vocab.json with merges.txt, or spiece.model)")
    if not files & {"preprocessor_config.json", "processor_config.json"}:
        missing.append("the image processor's settings (preprocessor_config.json or processor_config.json)")
    if missing:
        raise ModelLoadError(
            f"cannot load model {name!r}: the folder holds config.json but lacks "
            + "; ".join(missing)
            + " (save the processor beside the model: processor.save_pretrained(folder))"
        )
