"""The embedded default training corpus: TinyStories-like stories and child-directed talk.

Everything here is produced by code from a small hand-written lexicon and template grammar, so the
project can train and evaluate a model with no download. The text is built to be *learnable* by a
tiny GPT in minutes yet not memorisable: a ~1k-word vocabulary and hard agreement rules (a/an,
he/she/they with was/were and -s verbs, singular/plural after numbers) that a model gets right only
once it has learned them, plus world facts that recur across documents (cows say moo, rabbits like
carrots, Tuesday comes after Monday, an elephant is bigger than a mouse) and characters whose names
recur inside a story. Stories follow setup -> problem -> resolution -> ending arcs; conversations
are question/answer exchanges between a parent and a child.

The word lists, morphology and story templates are in tinylm.data.default_lexicon; this module
fills them in. Determinism: only ``random.Random(seed)`` drives choices, all tables are tuples in a
fixed order (never sets or hash-dependent iteration), so output is byte-identical across runs and
Python versions >= 3.10.
"""
from __future__ import annotations

import os
import random
import re
import tempfile

from tinylm.data.default_lexicon import (ACTS, ANIMALS, ARCS, AT_PLACES, BOYS, BREAKABLE, COLOURS,
    DAYS, DETAILS, DISHES, ENDINGS, FACTS, FAMILY, FARM, FEELINGS, FOODS, GIRLS, INDOOR, KID_ADJ,
    LOCS, MASS_FOODS, MEALS, NUMS, OPEN_ONE, OPEN_TWO, PETS, PET_DOING, PET_NAMES, PLACES, ROOMS,
    SMALL, TIMES, TOYS, WEATHER, a_or_an, plural, verb_forms)

__all__ = ["generate_documents", "write_corpus"]

# ------------------------------------------------------------------------------------- stories


def _fill(tpl: str, ctx: dict) -> str:
    return tpl.format_map(ctx)


_CAP = re.compile(r'(^|[.!?] )("?)([a-z])')


def _tidy(sentences: list) -> str:
    # Capitalise sentence starts (templates may begin with "{his} mom" or "{a_food}"). Each
    # template's first letter is capitalised on its own, because after a closing quote the regex
    # cannot tell a new sentence ('." his mom') from a speech tag ('?" asked Tom').
    return " ".join(_CAP.sub(lambda m: m.group(1) + m.group(2) + m.group(3).upper(), s)
                    for s in sentences)


def _person(rng, ctx: dict, prefix: str, girl: bool, avoid: tuple) -> str:
    name = rng.choice([n for n in (GIRLS if girl else BOYS) if n not in avoid])
    ctx[prefix] = name
    return name


def _context(rng, pair: bool) -> dict:
    c: dict = {}
    girl = rng.random() < 0.5
    n1 = _person(rng, c, "N", girl, ())
    if pair:
        girl2 = rng.random() < 0.5
        n2 = _person(rng, c, "N2", girl2, (n1,))
        c["N"] = f"{n1} and {n2}"
        c.update(he="they", him="them", his="their", was="were", my="our", I="we", me="us",
                 am="are", kids="girls" if girl and girl2 else "boys" if not (girl or girl2)
                 else "children", siblings="sisters" if girl and girl2 else "brothers" if not
                 (girl or girl2) else "brother and sister")
        used = (n1, n2)
    else:
        c.update(he="she" if girl else "he", him="her" if girl else "him",
                 his="her" if girl else "his", was="was", my="my", I="I", me="me", am="am")
        used = (n1,)
    kind = "girl" if girl else "boy"
    age = rng.choice(NUMS[2:8])                        # one age per story: "an eight year old"
    c.update(kind=kind, a_kid=a_or_an(rng.choice(KID_ADJ) + " " + kind), age=age, a_age=a_or_an(age))
    fgirl = rng.random() < 0.5
    f = _person(rng, c, "F", fgirl, used)
    _person(rng, c, "F2", rng.random() < 0.5, used + (f,))
    c.update(fkind="girl" if fgirl else "boy", a_fkind=a_or_an("girl" if fgirl else "boy"))
    fam, famhe = rng.choice(FAMILY)
    c.update(fam=fam, famhe=famhe, Fam=fam.capitalize())
    c["H"] = rng.choice((f"{c['his']} {fam}", f"{c['his']} {fam}", f))  # helper: mostly family
    toy, colour = rng.choice(TOYS), rng.choice(COLOURS)
    c.update(toy=toy, color=colour, a_color=a_or_an(colour), ctoy=f"{colour} {toy}", a_toy=a_or_an(toy),
             a_ctoy=a_or_an(f"{colour} {toy}"), a_colour_house=a_or_an(rng.choice(COLOURS) + " house"))
    btoy = rng.choice(BREAKABLE)
    c.update(btoy=btoy, cbtoy=f"{rng.choice(COLOURS)} {btoy}")
    food = rng.choice(FOODS)[0]
    c.update(a_food=a_or_an(food), food_pl=plural(food), mass=rng.choice(MASS_FOODS))
    an, sound, diet = rng.choice(SMALL)[:3]
    c.update(animal=an, a_animal=a_or_an(an), animals=plural(an), diet=diet,
             sound_line=f'The {an} said, "{sound.capitalize()}!"' if sound != "-" else
             f"The {an} looked at {c['N']} with big eyes.")
    fa, fsound, fdiet = rng.choice(FARM)[:3]
    fa2, _, fdiet2 = rng.choice([a for a in FARM if a[0] != fa])[:3]
    c.update(fanimal=fa, fanimals=plural(fa), fdiet=fdiet, a_fanimal2=a_or_an(fa2), fanimal2=fa2,
             fdiet2=fdiet2, fsound_line=f'"{fsound.capitalize()}!" said the {plural(fa)}.')
    c.update(place=rng.choice(PLACES), room=rng.choice(ROOMS), time=rng.choice(TIMES),
             day=rng.choice(DAYS))
    c["loc1"], c["loc2"], c["loc3"] = rng.sample(LOCS, 3)
    act, inact = rng.choice(ACTS), rng.choice(INDOOR)
    c.update(act=act, act_past=verb_forms(act)[1], inact_past=verb_forms(inact)[1],
             trait=rng.choice(KID_ADJ[1:]))
    # Counting in the baking arc: need n eggs, have m < n; "one egg was" vs "two eggs were".
    n = rng.randint(3, 6)
    m = rng.randint(1, n - 1)
    c.update(n=NUMS[n - 1], m=NUMS[m - 1], m_eggs="egg" if m == 1 else "eggs",
             m_were="was" if m == 1 else "were",
             count_seq=", ".join(NUMS[:m]).capitalize() + ".")
    dish = rng.choice(DISHES)
    c.update(dish=dish, a_dish=a_or_an(dish))
    pet, _, _, _, pcol = rng.choice(PETS)
    c.update(pet=pet, a_pet=a_or_an(pet), Pet=rng.choice(PET_NAMES), pet_colour=pcol,
             his_a_pet=f"{c['his']} little {pet}", pet_his="its",
             pet_doing=rng.choice(PET_DOING))
    # Capitalised twins of every value, for keys that open a sentence or a quotation.
    for k, v in list(c.items()):
        c.setdefault(k[0].upper() + k[1:], v[:1].upper() + v[1:])
    return c


def _story(rng) -> str:
    pair_ok, steps = rng.choice(ARCS)
    pair = pair_ok and rng.random() < 0.3
    c = _context(rng, pair)
    opening = rng.choice(OPEN_TWO if pair else OPEN_ONE)
    details = [t for t in DETAILS if not ("{a_age}" in opening and "{age}" in t)]  # no repeats
    out = [_fill(opening, c)] + [_fill(t, c) for t in rng.sample(details, rng.randint(1, 2))]
    out += [_fill(rng.choice(step), c) for step in steps]
    if rng.random() < 0.6:
        out.append(_fill(rng.choice(ENDINGS), c))
    return _tidy(out)


# ------------------------------------------------------------------------------- conversations
# Present tense, so subject-verb agreement is exercised on every line ("the dog says" /
# "the dogs say", "where is the ball" / "where are the balls").


def _talk(rng) -> str:
    c = _context(rng, pair=False)
    kid, mom = c["N"], c["Fam"]
    out = [rng.choice((f"{mom} and {kid} are in the {c['room']}.",
                       f"{kid} is at the {rng.choice(AT_PLACES)} with {c['his']} {c['fam']}.",
                       f"It is {c['time']}. {kid} and {mom} are looking at a picture book."))]
    for kind in rng.sample(range(14), rng.randint(4, 7)):   # distinct exchange types
        if kind == 0:      # naming an object and its colour, with a wrong guess corrected
            x, col = rng.choice(FOODS)
            guess = x if rng.random() < 0.4 else rng.choice(FOODS)[0]
            out.append(f'"Is this {a_or_an(guess)}, {kid}?" asks {mom}.')
            out.append(f'"Yes, it is {a_or_an(x)}," says {kid}.' if guess == x else
                       f'"No, it is not {a_or_an(guess)}. It is {a_or_an(x)}," says {kid}.')
            out.append(f'"What color is the {x}?" "The {x} is {col}."')
        elif kind == 1:    # where is / where are
            x, loc = rng.choice(TOYS), rng.choice(LOCS)
            if rng.random() < 0.5:
                wrong = rng.choice([l for l in LOCS if l != loc])
                out.append(f'"Where is the {x}?" asks {mom}. "Is it {wrong}?" asks {kid}. '
                           f'"No. Look, the {x} is {loc}."')
            else:
                out.append(f'"Where are the {plural(x)}?" asks {mom}. '
                           f'"The {plural(x)} are {loc}," says {kid}.')
        elif kind == 2:    # counting
            an = rng.choice(ANIMALS)[0]
            k = rng.randint(1, 6)
            seen = f"{NUMS[k - 1]} {an if k == 1 else plural(an)}"
            out.append(f'"How many {plural(an)} can you see?" asks {mom}. '
                       f'"{", ".join(NUMS[:k]).capitalize()}. I can see {seen}!" says {kid}.')
            out.append(f'"Yes, {seen}. Good counting!"')
        elif kind == 3:    # animal sounds, singular and plural
            an, snd = rng.choice([a for a in ANIMALS if a[1] != "-"])[:2]
            if rng.random() < 0.5:
                out.append(f'"What does the {an} say?" "The {an} says {snd}!"')
            else:
                out.append(f'"What do the {plural(an)} say?" "The {plural(an)} say {snd}!"')
        elif kind == 4:    # what animals eat
            an, _, diet = rng.choice(ANIMALS)[:3]
            other = rng.choice([a[2] for a in ANIMALS if a[2] != diet])
            if rng.random() < 0.5:
                out.append(f'"Does the {an} like {other}?" asks {mom}. "No, it does not. '
                           f'The {an} likes {diet}," says {kid}.')
            else:
                out.append(f'"What do {plural(an)} like to eat?" '
                           f'"{plural(an).capitalize()} like {diet}."')
        elif kind == 5:    # bigger / smaller
            a1, a2 = rng.sample(ANIMALS, 2)
            if a1[3] != a2[3]:
                big, small = (a1, a2) if int(a1[3]) > int(a2[3]) else (a2, a1)
                if rng.random() < 0.5:
                    out.append(f'"Which is bigger, the {a1[0]} or the {a2[0]}?" '
                               f'"The {big[0]} is bigger than the {small[0]}."')
                else:
                    out.append(f'"Which is smaller, the {a1[0]} or the {a2[0]}?" '
                               f'"The {small[0]} is smaller than the {big[0]}."')
        elif kind == 6:    # days of the week
            d = rng.randint(0, 6)
            out.append(f'"What day is it today?" "Today is {DAYS[d]}." '
                       f'"And what day is tomorrow?" "Tomorrow is {DAYS[(d + 1) % 7]}."')
        elif kind == 7:    # number after
            k = rng.randint(0, 8)
            out.append(f'"What number comes after {NUMS[k]}?" asks {mom}. '
                       f'"{NUMS[k + 1].capitalize()} comes after {NUMS[k]}!"')
        elif kind == 8:    # feelings with reasons
            feel, reasons = rng.choice(FEELINGS)
            out.append(f'"How do you feel today, {kid}?" "I feel {feel}." '
                       f'"Why are you {feel}?" "Because {_fill(rng.choice(reasons), c)}."')
        elif kind == 9:    # a third person's likes: "she likes" / "he does not like"
            f, he = c["F"], "she" if c["fkind"] == "girl" else "he"
            food = plural(rng.choice(FOODS)[0])
            if rng.random() < 0.5:
                out.append(f'"What does {f} like to do?" "{he.capitalize()} likes to '
                           f'{rng.choice(ACTS)}."')
            else:
                out.append(f'"Does {f} like {food}?" "Yes, {he} likes {food} a lot."'
                           if rng.random() < 0.5 else
                           f'"Does {f} like {food}?" "No, {he} does not like {food}."')
        elif kind == 10:   # meals and times of day
            when, meal = rng.choice(MEALS)
            food = rng.choice((a_or_an(rng.choice(FOODS)[0]), "some " + rng.choice(MASS_FOODS)))
            out.append(f'"What do we eat {when}?" "We eat {meal} {when}." '
                       f'"What do you want for {meal}?" "I want {food}, please." '
                       f'"Here you are." "Thank you, {mom}!"')
        elif kind == 11:   # weather and clothes
            w, item = rng.choice(WEATHER)
            out.append(f'"Look outside. What is the weather like?" "It is {w}." '
                       f'"So what do you need?" "I need {item}."')
        elif kind == 12:   # colour facts
            thing, col = rng.choice(FACTS)
            out.append(f'"What color is the {thing}?" "The {thing} is {col}."')
        else:              # what is the animal doing: is / are + -ing
            an = rng.choice(ANIMALS)[0]
            doing = verb_forms(rng.choice(("sleep", "eat", "play", "hide", "sit in the sun",
                                      "drink water", "look at me")))[2]
            out.append(f'"What is the {an} doing?" "The {an} is {doing}."' if rng.random() < .5
                       else f'"What are the {plural(an)} doing?" "They are {doing}."')
    out.append(rng.choice((f'"Good job, {kid}!" says {mom}.', f"{kid} gives {mom} a big hug.",
                           f'"Now it is time for lunch," says {mom}.')))
    return _tidy(out)


# ------------------------------------------------------------------------------------ public API


def generate_documents(n_words: int, seed: int = 0) -> list[str]:
    """Documents (each a story or a short child-directed conversation, one paragraph of
    several sentences, lines joined by single spaces or newlines) totalling at least
    n_words whitespace-separated words; identical output for identical (n_words, seed)."""
    rng = random.Random(seed)
    docs, total = [], 0
    while total < n_words:
        doc = _story(rng) if rng.random() < 0.6 else _talk(rng)
        docs.append(doc)
        total += len(doc.split())
    return docs


def _atomic_write(path: str, lines: list) -> None:
    # Write beside the target and rename, so a reader never sees a half-written corpus.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-",
                               suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)      # mkstemp makes 0600 files; a corpus should be world-readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_corpus(out_dir, n_words: int = 250_000, seed: int = 0, dev_fraction: float = 0.05) -> dict:
    """Writes out_dir/default.train and out_dir/default.dev, one document per line (documents
    must not contain newline characters in this file form - replace internal newlines with spaces),
    written to temp files and renamed (atomic). Returns {'train_words': .., 'dev_words': .., 'documents': ..}.
    Split deterministically by document (e.g. every 20th document to dev)."""
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    docs = [" ".join(d.split()) for d in generate_documents(n_words, seed)]
    train, dev = [], []
    for i, d in enumerate(docs):
        # Document i goes to dev when the running dev quota ticks over: every 20th at 0.05.
        (dev if int((i + 1) * dev_fraction) > int(i * dev_fraction) else train).append(d)
    _atomic_write(os.path.join(out_dir, "default.train"), train)
    _atomic_write(os.path.join(out_dir, "default.dev"), dev)
    return {"train_words": sum(len(d.split()) for d in train),
            "dev_words": sum(len(d.split()) for d in dev), "documents": len(docs)}
