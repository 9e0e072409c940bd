"""The command line: `python -m descriptors generate ...`, `validate FILE` and `prompts FILE`.

Parses flags, reports progress and problems on stderr, and maps outcomes to
exit codes. Generation, parsing, merging and validation live in `generate`,
`store` and `validate`; nothing here decides what a descriptor is.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from descriptors.generate import DEFAULT_LLM, GenerationCache, generate, make_llm
from descriptors.prompts import DEFAULT_TEMPLATE, PROMPT_STYLES, PromptStyle, build_prompts, check_template, normalise_name
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

    make = commands.add_parser("generate", help="ask an LLM for each class's visual features")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--classes", metavar="LIST", help='comma-separated, e.g. "tree frog,tailed frog"')
    source.add_argument("--classes-file", type=Path, metavar="FILE", help="one class per line; blank lines and # comments skipped")
    make.add_argument("--out", type=Path, required=True, metavar="FILE.json", help="created, or merged into if it exists")
    make.add_argument("--model", default=os.environ.get("DESCRY_LLM_MODEL", DEFAULT_LLM), help=f"LLM name (default: $DESCRY_LLM_MODEL or {DEFAULT_LLM})")
    make.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), metavar="URL", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    make.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight at once (default: 4)")
    make.add_argument("--force", action="store_true", help="regenerate classes the file already has")
    make.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="per request (default: 60)")
    make.add_argument("--retries", type=int, default=4, metavar="N", help="retries after a 429, 5xx or timeout (default: 4)")
    make.add_argument("--no-cache", action="store_true", help="ask the LLM even for classes answered before")

    check = commands.add_parser("validate", help="report every problem in a descriptor file")
    check.add_argument("file", type=Path, metavar="FILE.json")

    show = commands.add_parser("prompts", help="print every prompt the text encoder would read: class, descriptor, prompt")
    show.add_argument("file", type=Path, metavar="FILE.json")
    show.add_argument("--classes", metavar="LIST", help="comma-separated subset and order (default: every class of the file)")
    show.add_argument("--style", choices=PROMPT_STYLES, default="descry", help="descry (default) or dclip-release, the release's exact strings")
    show.add_argument("--prefix", default="", metavar="TEXT", help="text before every descriptor prompt")
    show.add_argument("--suffix", default="", metavar="TEXT", help='text after every descriptor prompt (the release on ImageNet: ".")')
    show.add_argument("--template", default=DEFAULT_TEMPLATE, help=f'for classes without descriptors (default: "{DEFAULT_TEMPLATE}")')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"validate": validate_command, "prompts": prompts_command, "generate": generate_command}
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
        for descriptor, prompt in zip(plan.descriptors[span], plan.prompts[span]):
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
    api_key = os.environ.get("OPENAI_API_KEY") or None
    if not api_key and not args.base_url:
        raise DescriptorError(NO_LLM)
    llm = make_llm(args.model, args.base_url, api_key, timeout=args.timeout, max_retries=args.retries)
    cache = None if args.no_cache else GenerationCache(default_cache_dir() / "generations.sqlite3", _warn)

    done = 0

    def progress(class_name: str, result) -> None:
        nonlocal done
        done += 1
        if class_name in result.failures:
            outcome = "failed"
        else:
            outcome = f"{len(result.descriptors[class_name])} descriptors" + (" (cached)" if class_name in result.cached else "")
        _say(f"[{done}/{len(todo)}] {class_name}: {outcome}")

    # Ctrl-C, kill and a closed terminal all stop the run the same way: nothing new is sent,
    # every answer received is saved, and the process exits within a second even if a request hangs.
    received: list[str] = []

    def stop(number, _frame) -> None:
        received.append(signal.Signals(number).name)
        llm.stop.set()

    previous = {}
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            previous[name] = signal.signal(getattr(signal, name), stop)
    try:
        result = generate(todo, llm, cache, args.concurrency, progress)
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
    if result.descriptors:
        # Re-read the file so that edits made meanwhile survive.
        latest = load_descriptors(args.out) if args.out.exists() else {}
        merged, written = merge_descriptors(latest, result.descriptors, replace=args.force)
        save_descriptors(args.out, merged)
        _say(f"wrote {len(written)} classes to {args.out}")
    for class_name, reason in result.failures.items():
        _say(f"error: could not generate {class_name!r}: {reason}")
    if received:
        shown = ", ".join(result.unfinished[:10]) + (" ..." if len(result.unfinished) > 10 else "")
        _say(f"stopped by {received[0]}: {len(result.unfinished)} classes not generated" + (f" ({shown})" if shown else ""))
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
    unique, seen = [], set()
    for name in classes:  # "Newt" after "newt" is the same class
        if normalise_name(name) not in seen:
            seen.add(normalise_name(name))
            unique.append(name)
    return unique


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
