"""IOB tags of token classification: what a valid tag is, which entities a sentence holds, IOB1 to
IOB2, and what truncation to max_length cuts. Pure functions that `tasks/ner.py` calls; no other
module reads tags.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from ..data import DataError, Examples

# "O", or B-/I- and an entity type without spaces (B-PER, I-MISC).
TAG = re.compile(r"O|[BI]-\S+")

_BATCH = 1000  # fast tokenizers parallelise within a batch; 1000 keeps memory small


def entity_types(tags: list[str]) -> Iterator[str]:
    """The type of every entity in a sentence, in order; an I- tag that continues nothing starts one."""
    previous = "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            yield tag[2:]
        previous = tag


def to_iob2(sentences: list[list[str]], scheme: str) -> list[list[str]]:
    """Tags as IOB2, given `data.tag_scheme`: "iob2" keeps them, "iob1" converts, "auto" converts
    only when some entity starts with I- (which IOB2 never does).

    IOB1 starts an entity with I- and uses B- only between two adjacent entities of one type; IOB2
    starts every entity with B-, which is what seqeval's strict mode scores.
    """
    if scheme == "iob2":
        return sentences
    if scheme == "auto" and not any(_starts_with_inside(tags) for tags in sentences):
        return sentences
    return [_iob1_to_iob2(tags) for tags in sentences]


def check_tags(words: Any, tags: Any, where: str) -> list[str]:
    """A sentence's tags, checked: a list of valid IOB tags and, when `words` is given, a non-empty
    list of strings with exactly one tag per word.

    Args:
        words: the sentence's words as read, or None to check the tags alone.
        tags: the tags as read (a JSON value, a dataset row).
        where: `<file>:<line>` for the message.

    Returns:
        The tags as a new list.

    Raises:
        DataError: `<where>: <problem>; <fix>`.
    """
    if words is not None:
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f"{where}: tokens must be a list of strings such as ['EU', 'rejects']")
        if not words:
            raise DataError(f"{where}: empty token list; drop the sentence or add its tokens")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"{where}: tags must be a list of strings such as ['B-PER', 'O']")
    if words is not None and len(words) != len(tags):
        raise DataError(f"{where}: {len(words)} tokens but {len(tags)} tags; every token needs exactly one tag")
    for tag in tags:
        if not TAG.fullmatch(tag):
            raise DataError(f"{where}: tag {tag!r} is not O or B-TYPE/I-TYPE; write tags such as B-PER, I-PER, O")
    return list(tags)


def ner_token_lengths(examples: Examples, tokenizer: Any, max_length: int) -> tuple[list[int], dict[str, int]]:
    """Sub-word lengths of every sentence (special tokens included), and what truncation to
    max_length would cut: {"truncated_words": words whose tag is lost, "truncated_entity_words":
    the non-O ones among them}. Needs a fast tokenizer (word ids)."""
    # Truncation drops content tokens and keeps the special ones, so this many content tokens survive.
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    lengths, cut_words, cut_entities = [], 0, 0
    for start in range(0, len(examples), _BATCH):
        batch = examples.tokens[start:start + _BATCH]
        # verbose=False: lengths beyond the model maximum are what we are measuring, not a mistake.
        encoded = tokenizer(batch, is_split_into_words=True, truncation=False, verbose=False)
        for offset, ids in enumerate(encoded["input_ids"]):
            lengths.append(len(ids))
            if len(ids) <= max_length:
                continue
            tags = examples.labels[start + offset]
            # A word is cut when its first sub-word token lies beyond the budget: its tag is lost.
            content = [w for w in encoded.word_ids(offset) if w is not None]
            first_token: dict[int, int] = {}
            for position, word in enumerate(content):
                first_token.setdefault(word, position)
            cut = [word for word, position in first_token.items() if position >= budget]
            cut_words += len(cut)
            cut_entities += sum(tags[word] != "O" for word in cut)
    return lengths, {"truncated_words": cut_words, "truncated_entity_words": cut_entities}


def _starts_with_inside(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return True
        previous = tag
    return False


def _iob1_to_iob2(tags: list[str]) -> list[str]:
    converted = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted
