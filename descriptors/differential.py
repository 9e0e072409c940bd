"""What tells two confused classes apart: differential descriptors from an LLM, in pairs.

Generic descriptors describe a class on its own; when two classes are
confused, what helps is what separates them. FuDD (Esfandiarpoor & Bach,
ICLR 2024) asks the LLM for exactly that. This module holds the pair prompt
(with our own worked example), the parser that turns an answer into (feature
of A, matching feature of B) pairs, the choice of the most confused pairs
from an evaluation's confusion matrix, and the merge into a descriptor set.
Requests, retries and the cache are `generate`'s. No files, no command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from descriptors.generate import LLM, Generation, GenerationCache, LLMError, ask_all, json_field
from descriptors.names import find_key, normalise_name

PAIRS_VERSION = "pairs-v1"  # bump when the prompt or the parser changes
SEPARATOR = "\u241f"  # joins the ordered pair into one cache key
MAX_PAIRS = 12

_EXAMPLE = """\
Q: What visual features tell a leopard from a cheetah in a photo? Answer with pairs, one per line, \
as "feature of the leopard | matching feature of the cheetah".
A:
- rosettes: rings of dark spots with a lighter centre | small, solid, round black spots
- no marks on the face | black tear lines running from the eyes to the mouth
- a stocky, muscular body | a slender, long-legged body
- a broad head | a small, rounded head
"""


def pair_prompt(a: str, b: str) -> str:
    """The question for one ordered pair, after one worked example, ending where the list should begin."""
    return (
        f"{_EXAMPLE}\n"
        f"Q: What visual features tell a {a} from a {b} in a photo? Answer with pairs, one per line, "
        f'as "feature of the {a} | matching feature of the {b}".\n'
        "A:\n-"
    )


_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s*")


PAIR_SCHEMA = {
    "name": "feature_pairs",
    "schema": {
        "type": "object",
        "properties": {
            "pairs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["pairs"],
        "additionalProperties": False,
    },
}


def parse_pairs(text: str, a: str, b: str) -> list[tuple[str, str]]:
    """(feature of A, feature of B) pairs from an answer in any of the usual styles.

    Understood: a JSON object {"pairs": [{"a": x, "b": y}, ...]} (what a
    server that honours `PAIR_SCHEMA` returns), "x | y" lines (with or
    without bullets), "x vs y" and "x / y" lines, "A: x" followed by "B: y"
    lines and "A: x / B: y" on one line (class names or the letters A and
    B), and prose sentences "the A has x, while the B has y". Class names at
    the start of a side are dropped; duplicates and empty sides are skipped;
    at most `MAX_PAIRS` are kept.
    """
    structured = json_field(text, "pairs")
    if isinstance(structured, list):
        found = [(p.get("a"), p.get("b")) for p in structured if isinstance(p, dict)]
        return _clean_pairs([(x, y) for x, y in found if isinstance(x, str) and isinstance(y, str)], a, b)
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    lines = [line for line in lines if line and not re.match(r"^Q:", line)]
    pairs: list[tuple[str, str]] = []
    side_a = None
    names_a, names_b = {normalise_name(a), "a"}, {normalise_name(b), "b"}
    for line in lines:
        body = _BULLET.sub("", line)
        both = _labelled_pair(body, names_a, names_b)
        if both is not None:
            pairs.append(both)
            continue
        labelled = re.match(r"^(?:the\s+)?([^:]{1,60}):\s*(.+)$", body, re.I)
        if labelled and normalise_name(labelled.group(1)) in names_a | names_b and "|" not in body:
            which, value = normalise_name(labelled.group(1)), labelled.group(2)
            if which in names_a:
                side_a = value
            elif side_a is not None:
                pairs.append((side_a, value))
                side_a = None
            continue
        split = re.split(r"\s*\|\s*|\s+vs\.?\s+|\s+versus\s+|\s+/\s+", body, maxsplit=1)
        if len(split) == 2:
            pairs.append((split[0], split[1]))
            continue
        prose = re.split(r",?\s+(?:while|whereas)\s+|;\s*", body, maxsplit=1)
        if len(prose) == 2:
            pairs.append((prose[0], prose[1]))
    return _clean_pairs(pairs, a, b)


def _labelled_pair(body: str, names_a: set[str], names_b: set[str]) -> tuple[str, str] | None:
    """ "A: x / B: y" (or with |, ; or a comma between, and class names for the letters) as (x, y), else None."""
    match = re.match(r"^(?:the\s+)?([^:]{1,60}):\s*(.+?)\s*(?:/|\||;|,)\s*(?:the\s+)?([^:]{1,60}):\s*(.+)$", body, re.I)
    if match and normalise_name(match.group(1)) in names_a and normalise_name(match.group(3)) in names_b:
        return match.group(2), match.group(4)
    return None


def _clean_pairs(pairs: Sequence[tuple[str, str]], a: str, b: str) -> list[tuple[str, str]]:
    kept, seen = [], set()
    for left, right in pairs:
        left, right = _side(left, a), _side(right, b)
        key = (normalise_name(left), normalise_name(right))
        if left and right and key not in seen and len(left) <= 200 and len(right) <= 200:
            seen.add(key)
            kept.append((left, right))
        if len(kept) == MAX_PAIRS:
            break
    return kept


def _side(text: str, name: str) -> str:
    """One side of a pair without its class name, articles, "has"/"is" or trailing punctuation."""
    text = re.sub(r"[*`]+", "", " ".join(text.split())).strip(" .;,")
    text = re.sub(rf"^(?:the\s+|a\s+|an\s+)?{re.escape(name)}\s*(?:has|is|have|are|with)?\s*", "", text, flags=re.I)
    text = re.sub(r"^(?:has|is|with)\s+", "", text, flags=re.I)
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text.strip(" .;,")


def pair_key(a: str, b: str) -> str:
    return f"{a}{SEPARATOR}{b}"


def differentiate(
    pairs: Sequence[tuple[str, str]],
    llm: LLM,
    cache: GenerationCache | None = None,
    concurrency: int = 4,
    on_done: Callable[[str, Generation], None] | None = None,
) -> Generation:
    """Differential pairs for each (A, B), keyed by `pair_key(A, B)`; the cache is keyed by the ordered pair."""

    def one(key: str) -> list:
        a, b = key.split(SEPARATOR, 1)
        found = parse_pairs(llm.complete(pair_prompt(a, b), PAIR_SCHEMA), a, b)
        if not found:
            raise LLMError("the answer held no feature pairs")
        return [list(pair) for pair in found]

    return ask_all([pair_key(a, b) for a, b in pairs], one, llm, cache, PAIRS_VERSION, concurrency, on_done)


def most_confused(confusion: Sequence[Sequence[int]], classes: Sequence[str], top: int) -> list[tuple[str, str, int]]:
    """The `top` class pairs confused most often, both directions counted: (more often true, other, count)."""
    pairs = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            count = int(confusion[i][j]) + int(confusion[j][i])
            if count:
                first, second = (i, j) if confusion[i][j] >= confusion[j][i] else (j, i)
                pairs.append((classes[first], classes[second], count))
    pairs.sort(key=lambda item: (-item[2], item[0], item[1]))
    return pairs[:top]


def merge_pairs(
    descriptors: Mapping[str, list[str]], a: str, b: str, pairs: Sequence[Sequence[str]]
) -> dict[str, list[str]]:
    """A copy of `descriptors` with each pair's features added to A's and B's lists, without duplicates."""
    merged = {name: list(values) for name, values in descriptors.items()}
    for name, features in ((a, [p[0] for p in pairs]), (b, [p[1] for p in pairs])):
        key = find_key(merged, name) or name
        values = merged.setdefault(key, [])
        have = {normalise_name(v) for v in values}
        for feature in features:
            if normalise_name(feature) not in have:
                values.append(feature)
                have.add(normalise_name(feature))
    return merged
