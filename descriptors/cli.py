"""The command line: `python -m descriptors generate | validate | differential | refine | prompts`.

`generate` asks an LLM for each class's features, `differential` for what
tells two classes apart, `refine` for what tells an evaluation's most
confused classes apart; `validate` reports every problem in a file and
`prompts` prints the sentences the text encoder reads. This layer parses
flags, reports progress and problems on stderr, and maps outcomes to exit
codes. Generation, parsing, merging and validation live in `generate`,
`differential`, `store` and `validate`; nothing here decides what a
descriptor is.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from descriptors.differential import SEPARATOR, differentiate, merge_pairs, most_confused
from descriptors.generate import DEFAULT_LLM, GenerationCache, configured_llm, generate, llm_model_name
from descriptors.names import key_index
from descriptors.prompts import (
    DEFAULT_TEMPLATE,
    PROMPT_STYLES,
    PromptStyle,
    build_prompts,
    check_template,
)
from descriptors.store import (
    DescriptorError,
    default_cache_dir,
    load_descriptors,
    merge_descriptors,
    missing_classes,
    parse_class_list,
    read_json_file,
    save_descriptors,
    select_classes,
)
from descriptors.validate import check_descriptors, check_structure

NO_LLM = (
    "no LLM is configured: set OPENAI_API_KEY for the OpenAI API, or point --base-url (or OPENAI_BASE_URL) "
    "at an OpenAI-compatible server such as Ollama's http://localhost:11434/v1"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m descriptors", description="Create and check descriptor files.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_generate(commands.add_parser("generate", help="ask an LLM for each class's visual features"))
    check = commands.add_parser("validate", help="report every problem in a descriptor file")
    check.add_argument("file", type=Path, metavar="FILE.json")
    _add_differential(
        commands.add_parser("differential", help="ask an LLM what tells two classes apart, as pairs of features")
    )
    _add_refine(
        commands.add_parser("refine", help="add differential descriptors for an evaluation's most confused pairs")
    )
    _add_prompts(
        commands.add_parser("prompts", help="print every prompt the text encoder would read: class, descriptor, prompt")
    )
    return parser


def _add_generate(make: argparse.ArgumentParser) -> None:
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--classes", metavar="LIST", help='comma-separated, e.g. "tree frog,tailed frog"')
    source.add_argument(
        "--classes-file", type=Path, metavar="FILE", help="one class per line; blank lines and # comments skipped"
    )
    make.add_argument(
        "--out", type=Path, required=True, metavar="FILE.json", help="created, or merged into if it exists"
    )
    make.add_argument("--force", action="store_true", help="regenerate classes the file already has")
    _llm_flags(make, what="classes")


def _add_differential(diff: argparse.ArgumentParser) -> None:
    diff.add_argument(
        "--pairs",
        action="append",
        required=True,
        metavar='"A|B"',
        help='two classes, e.g. "tree frog|tailed frog" (repeat)',
    )
    diff.add_argument(
        "--out", type=Path, required=True, metavar="FILE.json", help="the pairs, merged into the file if it exists"
    )
    _llm_flags(diff)


def _add_refine(refine: argparse.ArgumentParser) -> None:
    refine.add_argument(
        "--evaluation", type=Path, required=True, metavar="DIR", help="the --out folder of python -m explain evaluate"
    )
    refine.add_argument(
        "--descriptors",
        type=Path,
        required=True,
        metavar="FILE.json",
        help="the descriptors that were evaluated (never overwritten)",
    )
    refine.add_argument(
        "--top", type=int, default=5, metavar="N", help="how many confused pairs to refine (default: 5)"
    )
    refine.add_argument(
        "--model",
        dest="model",
        default=None,
        metavar="MODEL",
        help="whose confusions to use (default: the first model in metrics.json)",
    )
    refine.add_argument("--out", type=Path, required=True, metavar="NEW.json")
    _llm_flags(refine, model_flag="--llm-model")


def _add_prompts(show: argparse.ArgumentParser) -> None:
    show.add_argument("file", type=Path, metavar="FILE.json")
    show.add_argument(
        "--classes", metavar="LIST", help="comma-separated subset and order (default: every class of the file)"
    )
    show.add_argument(
        "--style",
        choices=PROMPT_STYLES,
        default="descry",
        help="descry (default) or dclip-release, the release's exact strings",
    )
    show.add_argument("--prefix", default="", metavar="TEXT", help="text before every descriptor prompt")
    show.add_argument(
        "--suffix", default="", metavar="TEXT", help='text after every descriptor prompt (the release on ImageNet: ".")'
    )
    show.add_argument(
        "--template", default=DEFAULT_TEMPLATE, help=f'for classes without descriptors (default: "{DEFAULT_TEMPLATE}")'
    )


def _llm_flags(parser: argparse.ArgumentParser, model_flag: str = "--model", what: str = "pairs") -> None:
    """The LLM, where it is, and how patiently to ask it; shared by generate, differential and refine."""
    parser.add_argument(
        model_flag,
        dest="llm_model",
        default=llm_model_name(),
        help=f"LLM name (default: $DESCRY_LLM_MODEL or {DEFAULT_LLM})",
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        metavar="URL",
        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="requests in flight at once (default: 4)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="per request (default: 60)")
    parser.add_argument(
        "--retries", type=int, default=4, metavar="N", help="retries after a 429, 5xx or timeout (default: 4)"
    )
    parser.add_argument("--no-cache", action="store_true", help=f"ask the LLM even for {what} answered before")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "validate": validate_command,
        "prompts": prompts_command,
        "generate": generate_command,
        "differential": differential_command,
        "refine": refine_command,
    }
    try:
        return commands[args.command](args)
    except DescriptorError as error:
        _say(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        return 130


def validate_command(args: argparse.Namespace) -> int:
    """Exit 0 when clean, 1 when there are problems, 2 when the file cannot be read at all."""
    data = read_json_file(args.file, "file")
    problems = check_structure(data)
    if not problems:
        problems = check_descriptors(data)
    for problem in problems:
        print(f"{args.file}: {problem}")
    if problems:
        _say(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {args.file}")
        return 1
    count = sum(len(values) for values in data.values())
    _say(f"{args.file}: {len(data)} classes, {count} descriptors, no problems")
    return 0


def prompts_command(args: argparse.Namespace) -> int:
    """One line per prompt, tab-separated: class, descriptor, prompt; the exact text the encoder reads.

    A tab, newline, carriage return or backslash inside a field is written as
    \\t, \\n, \\r or \\\\, so that every prompt stays on one line.
    """
    try:
        check_template(args.template)
    except ValueError as error:
        raise DescriptorError(str(error)) from None
    descriptors = load_descriptors(args.file)
    if args.classes is not None:
        descriptors = select_classes(descriptors, parse_class_list(args.classes))
    plan = build_prompts(descriptors, args.template, PromptStyle(args.style, args.prefix, args.suffix))
    lines = []
    for k, class_name in enumerate(plan.classes):
        span = plan.class_slice(k)
        for descriptor, prompt in zip(plan.descriptors[span], plan.prompts[span], strict=True):
            lines.append("\t".join(_one_line(field) for field in (class_name, descriptor, prompt)))
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def generate_command(args: argparse.Namespace) -> int:
    classes = _requested_classes(args)
    existing = load_descriptors(args.out) if args.out.exists() else {}
    todo = classes if args.force else missing_classes(existing, classes)
    if not todo:
        _say(f"all {len(classes)} classes are already in {args.out}; pass --force to generate them again")
        return 0
    llm, cache = _llm_and_cache(args)

    def described(class_name: str, result) -> str:
        return f"{len(result.descriptors[class_name])} descriptors"

    result, received = _stoppable(
        llm, lambda progress: generate(todo, llm, cache, args.concurrency, progress), len(todo), described
    )
    if result.descriptors:
        # Re-read the file so that edits made meanwhile survive.
        latest = load_descriptors(args.out) if args.out.exists() else {}
        merged, written = merge_descriptors(latest, result.descriptors, replace=args.force)
        save_descriptors(args.out, merged)
        _say(f"wrote {len(written)} classes to {args.out}")
    return _outcome(result, received, "classes")


def differential_command(args: argparse.Namespace) -> int:
    """Ask for what tells each pair apart; write [{"classes": [A, B], "pairs": [[feature of A, feature of B], ...]}]."""
    pairs = [_pair(text) for text in args.pairs]
    llm, cache = _llm_and_cache(args)
    result, received = _stoppable(
        llm, lambda progress: differentiate(pairs, llm, cache, args.concurrency, progress), len(pairs), _pair_count
    )
    if result.descriptors:
        entries = {tuple(e["classes"]): e for e in _read_pairs(args.out)} if args.out.exists() else {}
        for key, found in result.descriptors.items():
            a, b = key.split(SEPARATOR, 1)
            entries[(a, b)] = {"classes": [a, b], "pairs": found}
        save_descriptors(args.out, list(entries.values()))
        _say(f"wrote {len(result.descriptors)} pairs of classes to {args.out}")
    return _outcome(result, received, "pairs")


def refine_command(args: argparse.Namespace) -> int:
    """Differential descriptors for an evaluation's most confused pairs, merged into a new descriptor file."""
    if args.out.resolve() == args.descriptors.resolve():
        raise DescriptorError(f"--out must differ from --descriptors: {args.descriptors} is never overwritten")
    descriptors = load_descriptors(args.descriptors)
    metrics = read_json_file(args.evaluation / "metrics.json", "evaluation's metrics.json")
    if not isinstance(metrics, dict) or not metrics:
        raise DescriptorError(f"{args.evaluation / 'metrics.json'}: not an evaluation's metrics")
    model = args.model or next(iter(metrics))
    try:
        scores = metrics[model]["descriptors"]
        classes, confusion = list(scores["per_class"]), scores["confusion_matrix"]
    except (KeyError, TypeError):
        raise DescriptorError(
            f"{args.evaluation / 'metrics.json'}: no descriptors metrics for model {model!r}"
        ) from None
    labels_file = args.evaluation / "classes.json"
    labels = read_json_file(labels_file, "evaluation's classes.json") if labels_file.exists() else {}
    confused = most_confused(confusion, classes, args.top)
    if not confused:
        _say(f"{model}: no two classes were confused; nothing to refine")
        save_descriptors(args.out, descriptors)
        return 0
    names = [(labels.get(a, a), labels.get(b, b)) for a, b, _ in confused]
    for (a, b), (_, _, count) in zip(names, confused, strict=True):
        _say(f"confused {count} times: {a} and {b}")
    llm, cache = _llm_and_cache(args)
    result, received = _stoppable(
        llm, lambda progress: differentiate(names, llm, cache, args.concurrency, progress), len(names), _pair_count
    )
    refined = descriptors
    for key, found in result.descriptors.items():
        a, b = key.split(SEPARATOR, 1)
        refined = merge_pairs(refined, a, b, found)
    save_descriptors(args.out, refined)
    added = sum(len(refined[k]) for k in refined) - sum(len(v) for v in descriptors.values())
    _say(
        f"wrote {args.out}: {added} differential descriptors added for {len(result.descriptors)} pairs; "
        f"{args.descriptors} is unchanged"
    )
    return _outcome(result, received, "pairs")


def _pair(text: str) -> tuple[str, str]:
    a, _, b = text.partition("|")
    if not a.strip() or not b.strip():
        raise DescriptorError(f'--pairs {text!r}: write two classes as "A|B"')
    return a.strip(), b.strip()


def _pair_count(key: str, result) -> str:
    return f"{len(result.descriptors[key])} pairs of features"


def _read_pairs(path: Path) -> list[dict]:
    data = read_json_file(path, "pairs file")
    if not isinstance(data, list) or not all(isinstance(e, dict) and "classes" in e and "pairs" in e for e in data):
        raise DescriptorError(f"{path}: not a pairs file written by 'descriptors differential'")
    return data


def _llm_and_cache(args: argparse.Namespace):
    llm = configured_llm(args.llm_model, args.base_url, timeout=args.timeout, max_retries=args.retries)
    if llm is None:
        raise DescriptorError(NO_LLM)
    cache = None if args.no_cache else GenerationCache(default_cache_dir() / "generations.sqlite3", _warn)
    return llm, cache


def _stoppable(llm, run, total: int, describe):
    """Run `run(progress)`; Ctrl-C, kill and a closed terminal all stop it the same way: nothing new is sent,
    every answer received is kept, and the process carries on within a second even if a request hangs."""
    done = 0

    def progress(key: str, result) -> None:
        nonlocal done
        done += 1
        shown = key.replace(SEPARATOR, " vs ")
        outcome = (
            "failed"
            if key in result.failures
            else describe(key, result) + (" (cached)" if key in result.cached else "")
        )
        _say(f"[{done}/{total}] {shown}: {outcome}")

    received: list[str] = []

    def stop(number, _frame) -> None:
        received.append(signal.Signals(number).name)
        llm.stop.set()

    previous = {}
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            previous[name] = signal.signal(getattr(signal, name), stop)
    try:
        result = run(progress)
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
    return result, received


def _outcome(result, received: list[str], what: str) -> int:
    for key, reason in result.failures.items():
        _say(f"error: could not generate {key.replace(SEPARATOR, ' vs ')!r}: {reason}")
    if received:
        unfinished = [k.replace(SEPARATOR, " vs ") for k in result.unfinished]
        shown = ", ".join(unfinished[:10]) + (" ..." if len(unfinished) > 10 else "")
        _say(f"stopped by {received[0]}: {len(unfinished)} {what} not generated" + (f" ({shown})" if shown else ""))
        return 128 + getattr(signal, received[0])
    return 1 if result.failures else 0


def _warn(message: str) -> None:
    _say(f"warning: {message}")


def _requested_classes(args: argparse.Namespace) -> list[str]:
    if args.classes_file is not None:
        try:
            lines = args.classes_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DescriptorError(f"{args.classes_file}: no such class file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise DescriptorError(f"{args.classes_file}: cannot read ({error.__class__.__name__})") from None
        classes = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        classes = parse_class_list(args.classes)
    if not classes:
        raise DescriptorError("the class list is empty: give at least one class name")
    return list(key_index(classes).values())  # "Newt" after "newt" is the same class


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
