"""The command line: `python -m explain classify | evaluate | label`.

`classify` explains images one by one (tables, JSON lines, heatmaps),
`evaluate` scores a labelled dataset (metrics, views, diagnostics, a
report), and `label` pre-labels an unlabelled collection. This layer parses
flags, prints results, and turns the engine's exceptions into one-line
messages on stderr. It holds no scoring logic: every number it prints comes
from `Explainer` and evaluation; engines and output formats come from their
tables in `explain.labelling`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from descriptors import (
    DEFAULT_TEMPLATE,
    PROMPT_STYLES,
    DescriptorError,
    PromptStyle,
    load_descriptors,
    parse_class_list,
    select_classes,
)
from descriptors.prompts import check_template
from descriptors.store import default_cache_dir
from descriptors.validate import EMPTY, check_descriptors
from descriptors.waffle import DEFAULT_PAIRS
from explain.cache import EmbeddingStore, open_store
from explain.confidence import PROBABILITY_KINDS, Abstention, Decision, rule_for
from explain.engine import LONG_ENCODE, Explainer
from explain.errors import ExplainError, first_line
from explain.evaluate import METHODS
from explain.heatmap_drawing import write_heatmaps
from explain.images import open_image
from explain.labelling import ENGINES, FORMATS, EngineOptions, make_engine
from explain.labelling.outputs import ORDERS
from explain.models import DEFAULT_MODEL, DEVICES, configured_models
from explain.models.base import MAX_HEATMAP_SIZE
from explain.models.precision import PRECISIONS
from explain.pool import ExplainerPool
from explain.results import Classification

BATCH_SIZE = 16  # images decoded and encoded together; bounds memory on long lists


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explain", description="Explainable zero-shot classification by description."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_classify(commands.add_parser("classify", help="classify images and explain the prediction by descriptor"))
    _add_evaluate(commands.add_parser("evaluate", help="evaluate a dataset: metrics, views and descriptor diagnostics"))
    _add_label(
        commands.add_parser("label", help="pre-label an unlabelled collection, each label with its descriptor scores")
    )
    _add_calibrate(
        commands.add_parser("calibrate", help="fit temperature scaling on an evaluation's scores: calibration.json")
    )
    return parser


def _add_calibrate(calibrate: argparse.ArgumentParser) -> None:
    calibrate.add_argument("evaluation", type=Path, metavar="EVALUATION_DIR", help="an `explain evaluate` --out folder")
    calibrate.add_argument("--model", action="append", metavar="MODEL", help="only these models (default: all)")
    calibrate.add_argument("--method", action="append", choices=METHODS, help="only these methods (default: all three)")
    calibrate.add_argument(
        "--held-out",
        type=float,
        default=0.3,
        metavar="SHARE",
        help="share of images kept out of the fit, to measure it on (default: 0.3)",
    )
    calibrate.add_argument("--seed", type=int, default=0, help="the random split (default: 0)")
    calibrate.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="default: EVALUATION_DIR/calibration.json"
    )


def _add_classify(classify: argparse.ArgumentParser) -> None:
    classify.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    classify.add_argument(
        "--descriptors", required=True, metavar="FILE.json", help='{"class": ["descriptor", ...]} file'
    )
    classify.add_argument(
        "--classes", metavar="LIST", help='comma-separated subset and order, e.g. "tree frog,tailed frog"'
    )
    classify.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help=(
            "hub id, hf-hub:ORG/REPO, open_clip:ARCH/TAG or a folder "
            f"(default: the first of $EXPLAIN_MODEL, else {DEFAULT_MODEL})"
        ),
    )
    classify.add_argument("--device", default="auto", choices=DEVICES, help="default: auto (CUDA, MPS, CPU)")
    _add_precision_flag(classify)
    _add_template_flags(classify)
    _add_probability_flags(classify)
    classify.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")
    classify.add_argument("--top", type=int, default=5, metavar="N", help="classes shown in the table (default: 5)")
    classify.add_argument(
        "--heatmaps",
        type=Path,
        metavar="DIR",
        help=(
            "write where each descriptor of the top two classes matches: "
            "a PNG heatmap per descriptor and an .npz of the grids per image"
        ),
    )
    classify.add_argument(
        "--heatmap-size",
        type=_heatmap_size,
        default=None,
        metavar="PX",
        help=f"feed the image at PX square for a finer grid (e.g. 448; 32 to {MAX_HEATMAP_SIZE})",
    )
    classify.add_argument(
        "--faithfulness",
        action="store_true",
        help="with --heatmaps: test each map by deleting and inserting its locations against random orders "
        "(72 image forwards a map)",
    )
    _add_cache_flags(classify, "embedding cache (default: $DESCRY_CACHE_DIR or ~/.cache/descry)")


def _add_evaluate(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument(
        "data", metavar="DATA", help="an ImageFolder tree (DATA/<class>/<image>) or a CSV of path,label"
    )
    evaluate.add_argument("--descriptors", required=True, metavar="FILE.json")
    evaluate.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help=f"repeat to compare models (default: $EXPLAIN_MODEL or {DEFAULT_MODEL})",
    )
    evaluate.add_argument(
        "--out",
        type=Path,
        default=Path("evaluation"),
        metavar="DIR",
        help="where the reports go (default: ./evaluation)",
    )
    evaluate.add_argument("--batch-size", type=int, default=32, metavar="N")
    evaluate.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N", help="image-decoding processes"
    )
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate N images drawn at random (with --seed)")
    evaluate.add_argument(
        "--seed", type=int, default=0, metavar="S", help="for --limit and the random-descriptor control"
    )
    evaluate.add_argument("--device", default="auto", choices=DEVICES)
    _add_precision_flag(evaluate)
    _add_template_flags(evaluate)
    _add_probability_flags(evaluate, decisions=False)
    evaluate.add_argument(
        "--waffle-count",
        type=_positive,
        default=DEFAULT_PAIRS,
        metavar="N",
        help=f"WaffleCLIP control: pairs of random descriptors shared by all classes (default: {DEFAULT_PAIRS})",
    )
    evaluate.add_argument(
        "--waffle-reps",
        type=_positive,
        default=1,
        metavar="R",
        help="repetitions of the control with seeds S..S+R-1, reported as mean and std (WaffleCLIP used 7; default: 1)",
    )
    evaluate.add_argument("--strict", action="store_true", help="a dataset class without descriptors is an error")
    _add_engine_flags(evaluate, "embed images here (local, the default) or on Ray")
    _add_cache_flags(evaluate)


def _add_label(label: argparse.ArgumentParser) -> None:
    label.add_argument(
        "data", metavar="DATA", help="a folder tree of images, a text file of paths, or a CSV with a path column"
    )
    label.add_argument("--descriptors", required=True, metavar="FILE.json")
    label.add_argument(
        "--out", type=Path, required=True, metavar="OUT", help="folder for the labels; a re-run skips what it holds"
    )
    label.add_argument(
        "--model", default=None, metavar="MODEL", help=f"default: the first of $EXPLAIN_MODEL, else {DEFAULT_MODEL}"
    )
    label.add_argument(
        "--classes",
        metavar="LIST",
        help="the names labels are written with, comma-separated, matched to the descriptor file's classes by name "
        "(default: the file's own names)",
    )
    label.add_argument(
        "--classes-from",
        metavar="DATASET",
        help="take --classes from a labelled dataset: an ImageFolder tree's folder names or a CSV's labels",
    )
    label.add_argument("--top", type=_positive, default=5, metavar="K", help="classes kept per image (default: 5)")
    label.add_argument(
        "--descriptor-scores",
        type=_classes_or_all,
        default=2,
        metavar="K|all",
        help="keep the descriptor scores of the K best classes, or of all (default: 2, the label and the runner-up)",
    )
    label.add_argument("--format", choices=FORMATS, default=FORMATS[0])
    _add_probability_flags(label)
    _add_review_flags(label)
    _add_template_flags(label)
    _add_engine_flags(label)
    label.add_argument("--batch-size", type=_positive, default=64, metavar="N")
    label.add_argument(
        "--workers", type=int, default=2, metavar="N", help="decoding processes (local) or Ray actors (ray)"
    )
    label.add_argument("--device", default="auto", choices=DEVICES)
    _add_precision_flag(label)
    label.add_argument(
        "--part-size",
        type=_positive,
        default=256,
        metavar="N",
        help="rows written together; a crash loses at most one part (default: 256)",
    )
    _add_cache_flags(label)


def _add_review_flags(label: argparse.ArgumentParser) -> None:
    label.add_argument(
        "--order",
        choices=ORDERS,
        default="input",
        help="rows as read (input), or lowest margin (review, margin) or probability first",
    )
    label.add_argument(
        "--review-margin",
        type=float,
        default=1.0,
        metavar="M",
        help="tag rows whose margin is below M for review in FiftyOne (default: 1.0)",
    )


def _add_precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the towers' numbers: auto (fp16 on CUDA, bf16 on CPUs with bf16 units, else fp32), "
        "fp32, bf16, fp16 (CUDA) or int8 (CPU)",
    )


def _add_probability_flags(parser: argparse.ArgumentParser, decisions: bool = True) -> None:
    """--probabilities and --calibration; with `decisions`, also abstention and several labels per image."""
    parser.add_argument(
        "--probabilities",
        choices=PROBABILITY_KINDS,
        default="auto",
        help="softmax over the classes, or sigmoid per class; auto: the model's own (sigmoid for SigLIP)",
    )
    parser.add_argument(
        "--calibration", metavar="FILE", help="a calibration.json from `explain calibrate`: its fitted temperature"
    )
    if not decisions:
        return
    parser.add_argument(
        "--min-probability", type=float, default=0.0, metavar="P", help="give no label below this probability"
    )
    parser.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        metavar="M",
        help="give no label when the best class leads the runner-up by less than M (score units)",
    )
    parser.add_argument(
        "--multi-label", action="store_true", help="every class whose probability reaches its threshold"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        metavar="P",
        help="the multi-label threshold where the calibration fitted none (default: 0.5)",
    )


def _rule_name(rule: dict) -> str:
    """'softmax', 'sigmoid', or 'softmax, calibrated (T=1.83)'."""
    if not rule:
        return "unknown"
    if rule.get("calibrated"):
        return f"{rule['probabilities']}, calibrated (T={rule['temperature']:.3g})"
    return rule["probabilities"]


def _existing(path: str | None) -> str | None:
    if path is not None and not Path(path).is_file():
        raise ExplainError(f"{path}: no such calibration file")
    return path


def _add_template_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help=f'baseline prompt (default: "{DEFAULT_TEMPLATE}")')
    add_prompt_flags(parser)


def _add_engine_flags(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    parser.add_argument("--engine", choices=tuple(ENGINES), default="local", help=what)
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="a running Ray cluster (default: start Ray on this machine)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show Ray's own messages here (default: they go to OUT/ray.log)"
    )


def _add_cache_flags(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, help=what)
    parser.add_argument("--no-cache", action="store_true", help="keep embeddings in memory only")


def add_prompt_flags(parser: argparse.ArgumentParser) -> None:
    """--prompt-style, --prompt-prefix and --prompt-suffix, shared with `python -m descriptors prompts`."""
    parser.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default="descry",
        help="descry: the paper's rule on whole words (default); dclip-release: the DCLIP release's exact strings",
    )
    parser.add_argument(
        "--prompt-prefix",
        default="",
        metavar="TEXT",
        help='text before every descriptor prompt (WaffleCLIP: "A photo of a ")',
    )
    parser.add_argument(
        "--prompt-suffix",
        default="",
        metavar="TEXT",
        help='text after every descriptor prompt (the release on ImageNet: ".")',
    )


def prompt_style(args: argparse.Namespace) -> PromptStyle:
    return PromptStyle(args.prompt_style, args.prompt_prefix, args.prompt_suffix)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _classes_or_all(text: str) -> int | None:
    return None if text.strip().lower() == "all" else _positive(text)


def _heatmap_size(text: str) -> int:
    value = _positive(text)
    if not 32 <= value <= MAX_HEATMAP_SIZE:
        raise argparse.ArgumentTypeError(f"{value} px is outside 32 to {MAX_HEATMAP_SIZE} px")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = ("python", "-m", "explain", *argv)  # recorded with labels, as it was typed
    _quiet_transformers()
    try:
        commands = {
            "evaluate": evaluate_command,
            "label": label_command,
            "classify": classify_command,
            "calibrate": calibrate_command,
        }
        return commands[args.command](args)
    except (ExplainError, DescriptorError) as error:
        _error(str(error))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the last guard: a user never sees a traceback
        if os.environ.get("DESCRY_DEBUG"):
            raise
        _error(f"unexpected {error.__class__.__name__}: {first_line(error)} (set DESCRY_DEBUG=1 for details)")
        return 1


def classify_command(args: argparse.Namespace) -> int:
    # Check everything cheap before loading a model.
    classes = parse_class_list(args.classes) if args.classes is not None else None
    descriptors = select_classes(load_descriptors(args.descriptors), classes)
    _checked_template(args.template)
    # Empty classes are reported in the output as template fallbacks; other problems deserve a warning.
    problems = [problem for problem in check_descriptors(descriptors) if problem.kind != EMPTY]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        _error(f"warning: {problems[0]}{more}; see python -m descriptors validate {args.descriptors}")

    _existing(args.calibration)
    style = prompt_style(args)
    pool = _pool(
        args,
        [args.model or configured_models()[0]],
        rule=lambda name, model: rule_for(
            name, getattr(model, "sigmoid_loss", False), args.probabilities, args.calibration, style
        ),
    )
    decision = Decision(Abstention(args.min_probability, args.min_margin), args.multi_label, args.threshold)
    failures = 0
    for start in range(0, len(args.images), BATCH_SIZE):
        images, names = [], []
        for path in args.images[start : start + BATCH_SIZE]:
            try:
                images.append(open_image(path))
                names.append(path)
            except ExplainError as error:
                _error(str(error))
                failures += 1
        if images:
            explainer = pool.get()
            if args.heatmaps is not None:
                # Refused before any image is classified: a run that cannot write what was asked writes nothing.
                explainer.model.check_heatmaps(args.heatmap_size)
            _classify_batch(explainer, images, names, descriptors, args, decision)
    return 1 if failures else 0


def _classify_batch(explainer: Explainer, images, names, descriptors, args: argparse.Namespace, decision) -> None:
    """Print each image's result with what was decided (label, labels or abstention), and write its
    heatmaps with --heatmaps."""
    style = prompt_style(args)
    results = explainer.classify_many(images, descriptors, args.template, names, style, encode_progress)
    for image, result in zip(images, results, strict=True):
        ranked = result.predictions
        decided = decision(
            explainer.rule, [e.name for e in ranked], [e.score for e in ranked], [e.probability for e in ranked]
        )
        if args.json:
            print(json.dumps({**result.to_dict(), **decided}, ensure_ascii=False), flush=True)
        else:
            print(format_table(result, args.top, decided), flush=True)
        if args.heatmaps is not None:
            top = [entry.name for entry in result.predictions[:2]]
            heatmaps = explainer.heatmaps(
                image, descriptors, top, args.heatmap_size, False, args.template, style, result.image
            )
            if args.faithfulness:
                heatmaps = explainer.with_faithfulness(image, heatmaps)
                _say_faithfulness(heatmaps)
            write_heatmaps(heatmaps, image, args.heatmaps)


def _say_faithfulness(heatmaps) -> None:
    """One line per image: the maps' median deletion and insertion ratios, and what the test cost."""
    found = [entry.faithfulness for entry in heatmaps.entries]
    deletion = [f["deletion_ratio"] for f in found if f["deletion_ratio"] is not None]
    insertion = [f["insertion_ratio"] for f in found if f["insertion_ratio"] is not None]
    seconds = sum(f["seconds"] for f in found)
    print(
        f"  faithfulness of {len(found)} maps ({heatmaps.method}): median deletion ratio "
        f"{np.median(deletion) if deletion else float('nan'):.2f} (below 1: better than random orders), "
        f"insertion ratio {np.median(insertion) if insertion else float('nan'):.2f} (above 1: better); "
        f"{seconds:.1f} s",
        flush=True,
    )


def label_command(args: argparse.Namespace) -> int:
    from explain.datasets import load_dataset
    from explain.labelling import LabelRecipe, RunOptions, label_collection

    _checked_template(args.template)
    if args.classes is not None and args.classes_from is not None:
        raise ExplainError("give --classes or --classes-from, not both")
    classes = parse_class_list(args.classes) if args.classes is not None else None
    if args.classes_from is not None:
        classes = load_dataset(args.classes_from).classes
    recipe = LabelRecipe(
        args.model or configured_models()[0],
        load_descriptors(args.descriptors),
        tuple(classes) if classes is not None else None,
        args.template,
        prompt_style(args),
        args.top,
        args.descriptor_scores,
        str(args.descriptors),
        args.probabilities,
        _existing(args.calibration),
        args.min_probability,
        args.min_margin,
        args.multi_label,
        args.threshold,
        args.review_margin,
        args.precision,
    )
    options = RunOptions(
        args.engine,
        args.format,
        args.batch_size,
        args.workers,
        args.device,
        _store(args),
        args.ray_address,
        args.part_size,
        args.verbose,
        args.command_line,
        args.order,
    )

    def progress(total: int, already: int):
        if already:
            print(
                f"{already:,} of {total:,} images are already labelled in {args.out}; labelling the rest",
                file=sys.stderr,
                flush=True,
            )
        return _Bar("images", total - already) if total > already else None

    summary = label_collection(args.data, recipe, args.out, options, progress)
    abstained = f", {summary['abstained']:,} abstained" if summary["abstained"] else ""
    rule = summary["provenance"].get("probability_rule") or {}
    print(
        f"labelled {summary['labelled']:,} images ({summary['skipped']:,} already done, "
        f"{summary['failed']:,} unreadable{abstained}; probabilities: {_rule_name(rule)}); "
        f"wrote {', '.join(str(p) for p in summary['files'])}"
    )
    return 1 if summary["failed"] else 0


def encode_progress(total: int):
    """A progress bar on stderr for a long text encode, announced with its size; None for a short one."""
    if total < LONG_ENCODE:
        return None
    return _bar("prompts", total)


class _LiveStderr:
    """Whatever `sys.stderr` is at each write: while Ray's native output is sent to a log, Python's
    `sys.stderr` still reaches the terminal, and a bar made before that must follow it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _Bar:
    """A progress bar on stderr that counts images (or prompts), and shows what is happening before the first
    count ("starting Ray and 2 workers") with the seconds ticking, so a slow start never looks like a hang."""

    def __init__(self, label: str, total: int):
        from tqdm import tqdm

        self.label = label
        unit = "prompt" if label.startswith("prompts") else "img"
        self.bar = tqdm(total=total, desc=label, unit=unit, file=_LiveStderr(), leave=True)
        self.done = 0
        self._ticking = None

    def note(self, text: str | None) -> None:
        import threading

        if self._ticking is not None:
            self._ticking.set()
            self._ticking = None
        self.bar.set_description_str(text or self.label)
        if text:
            stop = self._ticking = threading.Event()

            def tick() -> None:
                while not stop.wait(1.0):
                    self.bar.refresh()

            threading.Thread(target=tick, daemon=True).start()

    def step(self, count: int) -> None:
        self.done += count
        self.bar.update(count)
        if self.done >= self.bar.total:
            self.note(None)
            self.bar.close()

    def __call__(self, count: int) -> None:  # the plain step counter evaluation and the encoder use
        self.step(count)


def _bar(label: str, total: int) -> _Bar:
    if label.startswith("prompts"):
        print(
            f"encoding {total:,} new prompts (first use with this model; cached for later runs)",
            file=sys.stderr,
            flush=True,
        )
    return _Bar(label, total)


def calibrate_command(args: argparse.Namespace) -> int:
    from explain.calibrate import calibrate_evaluation

    methods = tuple(dict.fromkeys(args.method)) if args.method else METHODS
    entries, paths = calibrate_evaluation(args.evaluation, args.model, methods, args.held_out, args.seed, args.out)
    for entry in entries:
        print(
            f"{entry.model} {entry.method}: T = {entry.temperature:.4g} ({entry.probabilities}); on "
            f"{entry.n_held_out} held-out images ECE {entry.before['ece']:.4f} -> {entry.after['ece']:.4f}, "
            f"NLL {entry.before['nll']:.4f} -> {entry.after['nll']:.4f}"
        )
        if entry.warning:
            _error(f"warning: {entry.model} {entry.method}: {entry.warning}")
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from explain.datasets import load_dataset
    from explain.evaluate import PromptRecipe, run_evaluation
    from explain.report import write_report

    _checked_template(args.template)
    recipe = PromptRecipe(args.template, prompt_style(args), args.waffle_count, args.waffle_reps, args.seed)
    descriptors = load_descriptors(args.descriptors)
    dataset = load_dataset(args.data, args.limit, args.seed)
    names = configured_models(args.model)
    store = _store(args)
    _existing(args.calibration)
    pool = _pool(args, names, store, rule=_evaluation_rule(args, recipe.style))
    explainers = {name: pool.get(name) for name in names}
    engine = make_engine(
        args.engine,
        EngineOptions(
            args.batch_size, args.workers, args.device, store, args.ray_address, args.out / "ray.log", args.verbose
        ),
    )
    run = run_evaluation(
        dataset, descriptors, explainers, recipe, store, args.batch_size, args.workers, args.strict, _bar, engine.embed
    )
    for name in run.missing:
        _error(f"warning: dataset class {name!r} has no descriptors; scored with the template")
    for reason in run.unreadable.values():
        _error(reason)
    paths = write_report(run, args.out)
    for model, methods in run.metrics.items():
        summary = "  ".join(
            f"{method} acc1 {_metric(methods[method], 'acc1')} acc5 {_metric(methods[method], 'acc5')}"
            for method in METHODS
        )
        print(f"{model}: {summary}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 1 if run.unreadable else 0


def _evaluation_rule(args: argparse.Namespace, style):
    """Each model's probabilities: its own kind (or --probabilities), calibrated where --calibration holds
    an entry for it; a file with none for any model evaluated is refused, naming why."""

    def rule(name, model):
        plain = rule_for(name, getattr(model, "sigmoid_loss", False), args.probabilities, None, style)
        if args.calibration is None:
            return plain
        try:
            return rule_for(name, getattr(model, "sigmoid_loss", False), args.probabilities, args.calibration, style)
        except ExplainError:
            if len(configured_models(args.model)) == 1:
                raise
            return plain  # another model's calibration: this one is reported uncalibrated

    return rule


def _metric(metrics: dict, key: str) -> str:
    value = metrics[key]
    if value != value:  # NaN: acc5 with fewer than five classes
        return "n/a"
    spread = metrics.get("std", {}).get(key)
    return f"{value:.4f}±{spread:.4f}" if spread is not None and len(metrics.get("seeds", [])) > 1 else f"{value:.4f}"


def format_table(result: Classification, top: int = 5, decided: dict | None = None) -> str:
    """A readable summary: what was decided, the top classes, then the descriptors of the first two, ranked.
    The heading says which probabilities these are (softmax over the classes, or sigmoid per class)."""
    baseline = {entry.name: entry.probability for entry in result.baseline}
    shown = result.predictions[: max(top, 1)]
    width = max(len("class"), *(len(entry.name) for entry in shown))
    kind = _rule_name(result.probabilities)
    lines = [f"{result.image}  (model: {result.model}; probabilities: {kind})"]
    if decided is not None and decided["abstained"]:
        lines.append(f"  no label: {decided['abstain_reason']}")
    elif decided is not None and len(decided["labels"]) > 1:
        lines.append(f"  labels: {', '.join(e['class'] for e in decided['labels'])}")
    lines.append(f"  {'#':>2}  {'class':<{width}}  {'prob':>6}  {'score':>7}  {'baseline':>8}")
    for rank, entry in enumerate(shown, 1):
        lines.append(
            f"  {rank:>2}  {entry.name:<{width}}  {entry.probability:>6.1%}  {entry.score:>7.2f}  "
            f"{baseline[entry.name]:>8.1%}"
        )
    for entry in result.predictions[:2]:
        lines.append("")
        if entry.fallback:
            lines.append(f"  {entry.name}: no descriptors, scored with its template prompt")
        else:
            lines.append(f"  {entry.name}: mean {entry.score:.2f} over {len(entry.descriptors)} descriptors")
        lines.extend(f"    {d.score:>7.2f}  {d.descriptor}" for d in entry.descriptors)
    if len(result.predictions) >= 2:
        lines.append(f"\n  margin {result.contrast().margin:+.2f} for {result.predictions[0].name}")
    fallback = [name for name in result.fallback_classes if name not in {e.name for e in result.predictions[:2]}]
    if fallback:
        lines.append(f"  no descriptors, scored with the template: {', '.join(fallback)}")
    return "\n".join(lines) + "\n"


def _pool(args: argparse.Namespace, names: list[str], store: EmbeddingStore | None = None, rule=None) -> ExplainerPool:
    """The models of a command, each loaded on first use; their notes (e.g. weights loaded with the
    architecture they were trained with) go to stderr."""
    store = store if store is not None else _store(args)
    return ExplainerPool(
        names,
        args.device,
        store,
        lambda note: print(f"note: {note}", file=sys.stderr, flush=True),
        rule=rule,
        precision=args.precision,
    )


def _checked_template(template: str) -> str:
    try:
        return check_template(template)
    except ValueError as error:
        raise DescriptorError(str(error)) from None


def _store(args: argparse.Namespace) -> EmbeddingStore | None:
    if args.no_cache:
        return None
    return open_store(args.cache_dir or default_cache_dir(), lambda message: _error(f"warning: {message}"))


def _quiet_transformers() -> None:
    # Progress bars and the torchvision fallback notice are noise on a CLI's stderr.
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _error(message: str) -> None:
    text = message if message.startswith("warning:") else f"error: {message}"
    print(text, file=sys.stderr, flush=True)
