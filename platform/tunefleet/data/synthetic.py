"""Small demo data sets that tunefleet generates itself: no files, deterministic per seed.

One generator per kind of task, each `fn(size, seed) -> (train, validation, test)` split 70/15/15.
Tasks pick theirs in `Task.synthetic`. Every set is learnable but not trivially: the label depends
on context (negation, which slot differs), and a few labels are wrong on purpose, so a perfect
score on the demo data means overfitting.

- `reviews`: product reviews, "negative"/"positive" (text classification);
- `news`: news-like sentences with PER/LOC/ORG entities, IOB2 tags (token classification);
- `paraphrase_pairs`: two statements, "1" when the second rewords the first, "0" when it says
  something else about the same kind of thing (text-pair classification);
- `similarity_pairs`: two scene descriptions scored 0-5 by how many of their five parts they share
  (text regression, STS-B style);
- `topics`: short news digests labelled with the sorted topics they touch, from sports, politics,
  tech and health, possibly none (multi-label classification).
"""

from __future__ import annotations

import random

from .examples import Examples

_LABEL_NOISE = 0.07  # a few wrong labels, so a perfect score on the demo data means overfitting


def _split(labels: list, texts: list | None = None, tokens: list | None = None,
           text_pairs: list | None = None) -> tuple[Examples, Examples, Examples]:
    """70/15/15 in generation order (the generators shuffle already)."""
    size = len(labels)
    n_train, n_validation = round(size * 0.70), round(size * 0.15)
    bounds = ((0, n_train), (n_train, n_train + n_validation), (n_train + n_validation, size))
    return tuple(  # type: ignore[return-value]
        Examples(
            texts=None if texts is None else texts[a:b],
            tokens=None if tokens is None else tokens[a:b],
            labels=labels[a:b],
            text_pairs=None if text_pairs is None else text_pairs[a:b],
        )
        for a, b in bounds
    )


def _balanced(rng: random.Random, size: int) -> list[bool]:
    """Half True, half False, shuffled, so every split holds both classes."""
    flags = [i % 2 == 1 for i in range(size)]
    rng.shuffle(flags)
    return flags


# --------------------------------------------------------------------------------------------------
# Reviews: sentiment

_PRODUCTS = ("blender", "laptop", "pair of headphones", "coffee maker", "backpack", "phone case",
             "desk lamp", "kettle", "keyboard", "vacuum", "tent", "office chair")
_GOOD = ("great", "excellent", "sturdy", "reliable", "comfortable", "quiet", "fast", "lovely",
         "well made", "worth the money", "easy to use", "solid")
_BAD = ("terrible", "flimsy", "noisy", "slow", "disappointing", "cheap", "broken", "awful",
        "overpriced", "uncomfortable", "hard to use", "fragile")
# Said of the delivery, not the product: sentiment words that must not decide the label.
_DELIVERY = ("quick", "late", "on time", "slow", "fast", "delayed")
_FILLERS = ("honestly", "after two weeks", "for the price", "out of the box", "so far", "overall",
            "to be fair", "in my experience", "at first glance", "compared to my old one")
# The last templates need context: negation flips an adjective and "but" overrides the first clause.
_REVIEW_TEMPLATES = (
    "{filler} the {product} is {adj} .",
    "the {product} is {adj} {filler} .",
    "i bought this {product} and it feels {adj} .",
    "{filler} , my new {product} is {adj} and the delivery was {delivery} .",
    "the {product} is not {opposite} .",
    "i expected it to be {opposite} but the {product} is {adj} .",
)


def reviews(size: int, seed: int) -> tuple[Examples, Examples, Examples]:
    """Short product reviews labelled "negative"/"positive" (balanced), with filler words, negations
    and contrasts, and about 7% flipped labels."""
    rng = random.Random(seed)
    texts, labels = [], []
    for positive in _balanced(rng, size):
        texts.append(_review(rng, positive))
        noisy = positive != (rng.random() < _LABEL_NOISE)
        labels.append("positive" if noisy else "negative")
    return _split(labels, texts=texts)


def _review(rng: random.Random, positive: bool) -> str:
    same, other = (_GOOD, _BAD) if positive else (_BAD, _GOOD)
    sentence = rng.choice(_REVIEW_TEMPLATES).format(
        filler=rng.choice(_FILLERS),
        product=rng.choice(_PRODUCTS),
        adj=rng.choice(same),
        opposite=rng.choice(other),
        delivery=rng.choice(_DELIVERY),
    )
    return " ".join(sentence.split())


# --------------------------------------------------------------------------------------------------
# News: named entities

# "Jordan" and "Washington" are both people and places: the tagger has to read the context.
_NAMES = {
    "PER": ("Anna Schmidt", "Rahul Mehta", "Maria Garcia", "John Smith", "Yuki Tanaka", "Olu Adeyemi",
            "Pierre Dubois", "Jordan", "Washington", "Li Wei"),
    "LOC": ("Berlin", "New York", "Lagos", "Tokyo", "Buenos Aires", "Lyon", "Cape Town", "Oslo",
            "Jordan", "Washington"),
    "ORG": ("Acme Corp", "Globex", "United Nations", "Initech", "Red Cross", "Stark Industries",
            "Umbrella Group", "Tyrell", "World Bank"),
}
_NEWS_TEMPLATES = (
    "{PER} flew to {LOC} on Monday .",
    "{PER} joined {ORG} last year .",
    "{ORG} opened a new office in {LOC} .",
    "{PER} met {PER} at the {ORG} headquarters in {LOC} .",
    "Shares of {ORG} rose after {PER} spoke in {LOC} .",
    "The weather in {LOC} was mild this week .",
    "According to {ORG} , the deal is off .",
    "{PER} said the trip to {LOC} was worth it .",
    "Nothing unusual happened on Tuesday .",
    "Talks between {ORG} and {ORG} ended without a deal .",
)


def news(size: int, seed: int) -> tuple[Examples, Examples, Examples]:
    """News-like template sentences naming people, places and organisations (IOB2 tags over PER, LOC,
    ORG); some names are both a person and a place."""
    rng = random.Random(seed)
    sentences, tags = [], []
    for _ in range(size):
        words, word_tags = _news_sentence(rng)
        sentences.append(words)
        tags.append(word_tags)
    return _split(tags, tokens=sentences)


def _news_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for word in rng.choice(_NEWS_TEMPLATES).split():
        kind = word[1:-1] if word.startswith("{") else None
        if kind is None:
            words.append(word)
            tags.append("O")
            continue
        name = rng.choice(_NAMES[kind]).split()
        words.extend(name)
        tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1))
    return words, tags


# --------------------------------------------------------------------------------------------------
# Paraphrase pairs

_ACTORS = ("the mayor", "the council", "the minister", "the union", "the company", "the university",
           "the hospital board", "the regulator", "the startup", "the museum")
# (verb, a synonym, the same verb in the passive): "approved" / "signed off on" / "was approved by".
_ACTIONS = (
    ("approved", "signed off on", "approved"),
    ("cancelled", "called off", "cancelled"),
    ("announced", "made public", "announced"),
    ("delayed", "put off", "delayed"),
    ("criticised", "spoke out against", "criticised"),
    ("launched", "kicked off", "launched"),
    ("rejected", "turned down", "rejected"),
    ("praised", "spoke warmly of", "praised"),
)
_THINGS = ("the budget", "the new stadium", "the merger", "the housing plan", "the music festival",
           "the safety report", "the tax cut", "the rail contract", "the school reform", "the water project")
_TIMES = ("on monday", "on friday", "last week", "this morning", "in march", "yesterday",
          "after a long debate", "late at night")
# Four ways to say one statement: the word order and the verb change, the meaning does not.
_STATEMENT_FORMS = (
    "{actor} {verb} {thing} {time} .",
    "{time} , {actor} {synonym} {thing} .",
    "{thing} was {passive} by {actor} {time} .",
    "{actor} {synonym} {thing} {time} .",
)
_STATEMENT_SLOTS = ("actor", "action", "thing", "time")
_SLOT_VALUES = {"actor": _ACTORS, "action": _ACTIONS, "thing": _THINGS, "time": _TIMES}


def paraphrase_pairs(size: int, seed: int) -> tuple[Examples, Examples, Examples]:
    """Pairs of statements labelled "1" when the second rewords the first (other word order, a
    synonym or the passive) and "0" when it changes who did what, what, or when (two of them, or
    one), often with many words in common, so word overlap alone does not decide. Balanced, about 7% flipped labels."""
    rng = random.Random(seed)
    texts, pairs, labels = [], [], []
    for paraphrase in _balanced(rng, size):
        statement = {slot: rng.choice(_SLOT_VALUES[slot]) for slot in _STATEMENT_SLOTS}
        first, second = rng.sample(range(len(_STATEMENT_FORMS)), 2)
        other = dict(statement)
        if not paraphrase:
            # Usually two parts change, sometimes one; the same form is allowed so the words can
            # overlap a lot. (With one part changed most of the time, a small model from scratch
            # barely beats chance in a few hundred steps, and the demo should be learnable.)
            for slot in rng.sample(_STATEMENT_SLOTS, 2 if rng.random() < 0.7 else 1):
                other[slot] = rng.choice([v for v in _SLOT_VALUES[slot] if v != statement[slot]])
            second = rng.randrange(len(_STATEMENT_FORMS))
        texts.append(_statement(statement, first))
        pairs.append(_statement(other, second))
        noisy = paraphrase != (rng.random() < _LABEL_NOISE)
        labels.append("1" if noisy else "0")
    return _split(labels, texts=texts, text_pairs=pairs)


def _statement(parts: dict, form: int) -> str:
    verb, synonym, passive = parts["action"]
    return _STATEMENT_FORMS[form].format(actor=parts["actor"], verb=verb, synonym=synonym, passive=passive,
                                         thing=parts["thing"], time=parts["time"])


# --------------------------------------------------------------------------------------------------
# Similarity pairs

_SCENE_PARTS = {
    "who": ("a man", "a woman", "a child", "the chef", "an old farmer", "a young doctor", "two students",
            "the pilot"),
    "does": ("is cooking", "is painting", "is reading about", "is carrying", "is photographing",
             "is cleaning", "is selling", "is repairing"),
    "what": ("a red bicycle", "the kitchen table", "a wooden boat", "an old map", "a bowl of soup",
             "a small guitar", "the garden fence", "a stack of books"),
    "where": ("in the park", "at the market", "on the beach", "in a small room", "near the river",
              "at the station", "in the garage", "on a rooftop"),
    "when": ("in the morning", "at night", "after lunch", "on a rainy day", "before sunrise",
             "during the storm", "on sunday", "at noon"),
}
_SCENE_FORMS = (
    "{who} {does} {what} {where} {when} .",
    "{when} , {who} {does} {what} {where} .",
    "{where} {when} , {who} {does} {what} .",
)


def similarity_pairs(size: int, seed: int) -> tuple[Examples, Examples, Examples]:
    """Pairs of scene descriptions (who does what, where, when) scored 0.0-5.0: the number of the five
    parts they share, give or take 0.4, in varying word order; about 7% of scores are off by 1.5.
    Shared-part counts 0-5 are equally common."""
    rng = random.Random(seed)
    texts, pairs, scores = [], [], []
    slots = tuple(_SCENE_PARTS)
    for _ in range(size):
        shared = rng.randint(0, len(slots))
        kept = set(rng.sample(slots, shared))
        first = {slot: rng.choice(_SCENE_PARTS[slot]) for slot in slots}
        second = {slot: first[slot] if slot in kept else
                  rng.choice([v for v in _SCENE_PARTS[slot] if v != first[slot]]) for slot in slots}
        texts.append(rng.choice(_SCENE_FORMS).format(**first))
        pairs.append(rng.choice(_SCENE_FORMS).format(**second))
        score = shared + rng.uniform(-0.4, 0.4)
        if rng.random() < _LABEL_NOISE:
            score += rng.choice((-1.5, 1.5))
        scores.append(round(min(5.0, max(0.0, score)), 2))
    return _split(scores, texts=texts, text_pairs=pairs)


# --------------------------------------------------------------------------------------------------
# Topics: multi-label

_TOPIC_CLAUSES = {
    "sports": ("the striker scored twice in the final", "the home side won the derby",
               "the coach praised the young goalkeeper", "the marathon drew a record field",
               "the tennis champion announced her retirement", "fans filled the stadium for the cup match"),
    "politics": ("parliament passed the budget bill", "the senator announced her resignation",
                 "voters go to the polls next week", "the minister defended the new tax",
                 "coalition talks collapsed overnight", "the president signed the treaty"),
    "tech": ("the startup unveiled a faster chip", "a software update fixed the security flaw",
             "the phone maker launched a folding model", "engineers trained a larger language model",
             "the app reached ten million users", "a new data centre opened outside the city"),
    "health": ("doctors warned of an early flu season", "the clinic opened a vaccine centre",
               "a study linked sleep to heart health", "the hospital cut its waiting times",
               "nurses called for more staff", "researchers tested a new malaria drug"),
}
# Everyday news; some borrow a topic's words ("team", "announced", "launched") without its topic.
_NEUTRAL_CLAUSES = ("the weather stayed mild", "traffic was heavy downtown", "a new cafe opened on the main street",
                    "the library extended its hours", "the river rose after the rain",
                    "a local bakery won a prize", "a team of volunteers cleaned the beach",
                    "the zoo announced the birth of a giraffe", "the train was late again",
                    "the school launched a reading club")
TOPICS = tuple(sorted(_TOPIC_CLAUSES))


def topics(size: int, seed: int) -> tuple[Examples, Examples, Examples]:
    """Short news digests of two to four clauses, labelled with the sorted list of topics they touch
    (health, politics, sports, tech): none in about 15%, one in 45%, two in 30%, three in 10%.
    About 7% of examples have one topic wrongly added or dropped."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(size):
        count = rng.choices((0, 1, 2, 3), weights=(15, 45, 30, 10))[0]
        present = rng.sample(TOPICS, count)
        clauses = [rng.choice(_TOPIC_CLAUSES[topic]) for topic in present]
        clauses += rng.sample(_NEUTRAL_CLAUSES, rng.randint(1 if count < 2 else 0, 2))
        rng.shuffle(clauses)
        texts.append(" . ".join(clauses) + " .")
        label = set(present)
        if rng.random() < _LABEL_NOISE:
            label ^= {rng.choice(TOPICS)}
        labels.append(sorted(label))
    return _split(labels, texts=texts)
