"""The lexicon of the embedded default corpus (tinylm.data.default_corpus): English morphology
for the few rules the text exercises (plurals, verb forms, a/an), the word lists with the world
facts they carry (what each animal says and eats, how big it is), and the story-arc templates.

Only tuples and dicts built in a fixed order, so the generated text never depends on hashing.
"""
from __future__ import annotations

# ----------------------------------------------------------------------------------- morphology


def _w(s: str) -> tuple:
    return tuple(s.split())


# Irregular forms are listed explicitly; everything else follows the regular spelling rules below.
_IRREG_PLURAL = dict(zip(
    _w("mouse sheep fish deer wolf leaf tomato potato mango scarf"),
    _w("mice sheep fish deer wolves leaves tomatoes potatoes mangoes scarves")))
_IRREG_PAST = dict(p.split(":") for p in _w(
    "run:ran sing:sang draw:drew swim:swam build:built dig:dug eat:ate ride:rode throw:threw "
    "catch:caught fly:flew hide:hid read:read make:made go:went see:saw sit:sat find:found "
    "feed:fed give:gave blow:blew spin:spun swing:swung do:did have:had"))
_DOUBLE = frozenset(_w("hop skip clap nap drop hug jog dig swim run sit spin stop"))


def plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")          # "teddy bear" -> "teddy bears"
    if last in _IRREG_PLURAL:
        last = _IRREG_PLURAL[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def verb_forms(phrase: str) -> tuple:
    """'fly kites' -> ('flies kites', 'flew kites', 'flying kites'): 3sg present, past, -ing."""
    v, _, rest = phrase.partition(" ")
    rest = " " + rest if rest else ""
    if v in ("have", "do", "go"):
        s = {"have": "has", "do": "does", "go": "goes"}[v]
    elif v.endswith(("s", "x", "ch", "sh")):
        s = v + "es"
    elif v.endswith("y") and v[-2] not in "aeiou":
        s = v[:-1] + "ies"
    else:
        s = v + "s"
    dbl = v + v[-1] if v in _DOUBLE else v
    if v in _IRREG_PAST:
        past = _IRREG_PAST[v]
    elif v.endswith("e"):
        past = v + "d"
    elif v.endswith("y") and v[-2] not in "aeiou":
        past = v[:-1] + "ied"
    else:
        past = dbl + "ed"
    ing = v[:-1] + "ing" if v.endswith("e") and not v.endswith("ee") else dbl + "ing"
    return s + rest, past + rest, ing + rest


def a_or_an(phrase: str) -> str:
    # No word in the lexicon starts with a "yu" u or a silent h, so spelling decides a/an.
    return ("an " if phrase[0] in "aeiouAEIOU" else "a ") + phrase


# ------------------------------------------------------------------------------------- lexicon

GIRLS = _w("Lily Mia Sue Anna Emma Lucy Sara Zoe Ella Amy Kate Rosa Nora Ruby Maya Jane Lola Ivy "
           "Daisy Molly Hannah Grace Chloe Bella")
BOYS = _w("Tom Ben Max Sam Leo Jack Tim Finn Jake Noah Owen Luke Oscar Theo Eli Adam Hugo Milo "
          "Toby Dan Billy Peter Henry Ryan")
PET_NAMES = _w("Spot Fluffy Buddy Coco Pip Sunny Rex Lulu Patch Snowy Pepper Rusty Bubbles Ziggy")
# (noun, pronoun): who helps in a story and who talks to the child in a conversation.
FAMILY = (("mom", "she"), ("dad", "he"), ("grandma", "she"), ("grandpa", "he"))
# name sound diet size colour: the facts a model can pick up across documents ('-' = no sound).
ANIMALS = tuple(tuple(r.split()) for r in (
    "dog woof bones 4 brown", "cat meow fish 3 black", "cow moo grass 7 black",
    "duck quack bread 2 yellow", "sheep baa grass 5 white", "pig oink apples 5 pink",
    "horse neigh hay 8 brown", "hen cluck seeds 2 red", "owl hoo mice 2 brown",
    "frog ribbit flies 1 green", "lion roar meat 8 gold", "mouse squeak cheese 1 gray",
    "bee buzz flowers 0 yellow", "bird tweet seeds 1 blue", "goat maa grass 5 white",
    "snake hiss eggs 3 green", "bear growl honey 8 brown", "monkey ooh bananas 4 brown",
    "rabbit - carrots 2 white", "bunny - carrots 2 gray", "fox - berries 3 orange",
    "elephant - peanuts 10 gray", "tiger roar meat 8 orange", "turtle - leaves 2 green",
    "squirrel - nuts 1 brown", "butterfly - flowers 0 orange", "puppy woof milk 2 brown",
    "kitten meow milk 1 white", "giraffe - leaves 10 yellow", "zebra - grass 8 white",
    "penguin - fish 3 black", "whale - fish 11 blue", "ant - crumbs 0 black",
    "snail - leaves 0 brown", "deer - grass 6 brown", "wolf howl meat 6 gray",
    "lamb baa grass 3 white", "pony neigh apples 6 white", "crow caw corn 2 black",
    "hippo - grass 10 gray", "hamster squeak seeds 1 brown", "chick peep seeds 0 yellow",
    "donkey hee-haw hay 6 gray", "parrot squawk nuts 2 green"))
PETS = tuple(a for a in ANIMALS if a[0] in ("dog", "cat", "bunny", "puppy", "kitten", "hamster"))
# A hungry stray in a story is a small animal; a farm visit meets farm animals.
SMALL = tuple(a for a in ANIMALS if int(a[3]) <= 4 and a[0] != "whale")
FARM = tuple(a for a in ANIMALS if a[0] in _w("cow sheep pig horse hen duck goat donkey lamb pony"))
FOODS = tuple(tuple(p.split(":")) for p in _w(
    "apple:red banana:yellow orange:orange cookie:brown cupcake:pink egg:white carrot:orange "
    "grape:purple pear:green plum:purple cherry:red strawberry:red lemon:yellow tomato:red "
    "peach:pink muffin:brown potato:brown pea:green bean:green cucumber:green pumpkin:orange "
    "melon:green blueberry:blue lime:green coconut:brown pineapple:yellow donut:pink mango:orange "
    "pretzel:brown raspberry:red onion:white radish:red"))
MASS_FOODS = _w("milk juice soup bread rice cheese honey water jam pasta porridge yogurt popcorn "
                "toast cereal")
TOYS = ("ball", "kite", "doll", "teddy bear", "car", "truck", "train", "boat", "drum", "block",
        "puzzle", "balloon", "book", "hat", "shoe", "sock", "crayon", "cup", "spoon", "box",
        "bucket", "shovel", "robot", "umbrella", "scarf", "coat", "mitten", "backpack", "bike",
        "wagon", "whistle", "key", "blanket", "pillow", "flower", "shell", "rock", "feather",
        "ribbon", "bell", "marble", "plane", "rocket", "crown", "puppet", "toy horse", "top")
# Only these can "break into two pieces" and be glued back together.
BREAKABLE = ("car", "truck", "train", "boat", "drum", "robot", "plane", "rocket", "crown", "doll",
             "toy horse", "top", "whistle", "cup", "kite", "wagon", "puppet")
COLOURS = _w("red blue green yellow orange pink purple brown black white gray gold silver")
FEELINGS = (("happy", ("we are going to the {place}", "I have a new {toy}")),
            ("sad", ("my {toy} is broken", "my friend went home")),
            ("scared", ("there is a big {animal} outside", "it is dark in my room")),
            ("tired", ("I played all day", "I woke up very early")),
            ("hungry", ("I did not eat my lunch", "it is time to eat")),
            ("excited", ("today is my birthday", "{F} is coming to play")),
            ("grumpy", ("{F} took my {toy}", "I do not want to take a bath")),
            ("proud", ("I can count to ten", "I made a picture all by myself")),
            ("surprised", ("I found {a_toy} in the garden", "there is {a_animal} in the kitchen")),
            ("sleepy", ("it is late", "I read a long book")))
KID_ADJ = _w("little kind happy brave small curious cheerful friendly gentle clever shy funny")
PLACES = _w("park garden beach forest farm zoo pond river lake hill meadow playground")
AT_PLACES = _w("park beach farm zoo pond playground library market bakery shop")  # "at the _"
ROOMS = _w("kitchen bedroom bathroom hall attic basement playroom")
LOCS = ("under the bed", "on the bed", "under the table", "on the table", "in the box",
        "behind the door", "next to the chair", "under the sofa", "on the sofa", "in the basket",
        "on the shelf", "by the window", "under the tree", "in the bag", "on the floor",
        "in the toy box", "behind the curtain", "under the blanket", "in the drawer",
        "in the closet", "near the lamp", "in the garden", "on the stairs", "behind the sofa",
        "in the car", "under the pillow", "next to the bath", "on top of the fridge")
# An activity is a verb phrase; verb_forms() conjugates its first word.
ACTS = ("play tag", "play hide and seek", "fly kites", "ride bikes", "build sand castles",
        "swim in the lake", "climb trees", "dig in the sand", "splash in puddles", "pick flowers",
        "blow bubbles", "feed the ducks", "kick a ball", "swing on the swings",
        "roll down the hill", "chase butterflies", "watch the birds", "jump over the waves",
        "hop like a frog", "look for shells", "skip in the sun", "run in the grass")
INDOOR = ("draw pictures", "read books", "bake cookies", "do puzzles", "sing songs",
          "dance to music", "build a tower with blocks", "make a paper boat", "paint pictures",
          "play with the dolls", "make a blanket fort", "clap to a song")
NUMS = _w("one two three four five six seven eight nine ten")
DAYS = _w("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
TIMES = _w("morning afternoon evening")
MEALS = (("in the morning", "breakfast"), ("at noon", "lunch"), ("in the evening", "dinner"))
WEATHER = (("sunny", "my sun hat"), ("rainy", "my boots"), ("rainy", "my umbrella"),
           ("snowy", "my mittens"), ("snowy", "my warm coat"), ("windy", "my scarf"),
           ("cold", "my coat"), ("windy", "my jacket"))
FACTS = (("sky", "blue"), ("grass", "green"), ("sun", "yellow"), ("snow", "white"),
         ("sea", "blue"), ("night", "dark"))
DISHES = _w("cake pie") + ("carrot cake", "apple pie", "lemon cake", "cherry pie", "chocolate cake")
PET_DOING = ("sleeping under a tree", "playing with a butterfly", "sitting by the pond",
             "rolling in the grass", "hiding behind a bench", "chasing a leaf")

# ----------------------------------------------------------------------------------- story arcs
# Each step is a tuple of interchangeable sentences (one is picked); steps that must agree with
# each other are written as one template. Keys: {N} main character(s) with pronouns {he} {him}
# {his} {was} {my} {I} {me} {am} (plural for two children); {F} a friend; {H} a helper;
# {Key} is the capitalised value of {key}.
ARCS = (
    (True, (  # lost toy
        ("One day, {N} could not find {his} {ctoy}.", "One {time}, {his} {ctoy} was gone.",
         "After lunch, {N} wanted to play with {his} {ctoy}, but {he} could not find it."),
        ('"Where is {my} {toy}?" asked {N}.', '"Oh no! Where did {my} {toy} go?" said {N}.'),
        ("{He} looked {loc1}, but it was not there.",
         "First {he} looked {loc1}. It was not there."),
        ("Then {he} looked {loc2}. It was not there either.",
         "{He} looked {loc2} too, but {he} found only {a_food}."),
        ("{N} felt sad.", "{N} started to cry.", "{N} {was} very sad."),
        ('{H} came in and said, "Do not be sad. Let us look together."',
         '{H} saw {him} and said, "I can help you look."'),
        ("They looked {loc3}, and there it was!", "{H} looked {loc3}. There was the {toy}!"),
        ('"Thank you!" said {N}, and {he} hugged the {toy}.',
         "{N} {was} so happy to see {his} {ctoy} again."))),
    (True, (  # rain
        ("One {time}, {N} wanted to go to the {place}.", "{N} wanted to {act} at the {place}."),
        ("But then dark clouds came, and it started to rain.",
         "But when {he} looked outside, it was raining."),
        ('"Can {I} still go to the {place}?" asked {N}.', '"Oh no, the rain!" said {N}.'),
        ('"Not today," said {H}. "It is too wet outside."',
         '{H} said, "We can go when the rain stops."'),
        ("{N} felt sad.", "{N} sat by the window and watched the rain."),
        ("So they stayed inside and {inact_past}.",
         "Then {H} had an idea. They {inact_past} together."),
        ("Soon the rain stopped, and the sun came out.",
         "After a while, the rain stopped. There was a big rainbow in the sky."),
        ("{N} went to the {place} and {act_past} until dinner.",
         "They put on their boots and went to the {place} to {act}."))),
    (True, (  # hungry animal
        ("One day, {N} went to the {place} with {his} {fam}.",
         "{N} {was} walking in the {place} when {he} heard a little noise."),
        ("There {he} saw {a_animal}. It looked very hungry.",
         "Under a bush, there was a little {animal}. The {animal} looked hungry and sad."),
        ('"Are you hungry, little {animal}?" asked {N}.',
         '"Hello, little {animal}," said {N}. "Are you hungry?"'),
        ("{sound_line}",),
        ("{N} knew that {animals} like {diet}. So {he} gave the {animal} some {diet}.",
         "{N} had {a_food}, but the {animal} did not want it. It wanted {diet}. "
         "So {N} found some {diet}."),
        ("The {animal} ate it all up.", "The {animal} ate and ate until it was full."),
        ("Now the {animal} was happy, and so {was} {N}.",
         "The {animal} followed {N} all the way home."),
        ("{N} and the {animal} became good friends.",
         "From that day on, {N} visited the {animal} every {time}."))),
    (False, (  # broken toy
        ("{N} was playing with {his} {cbtoy} in the {room}.",
         "One day, {N} took {his} {cbtoy} to the {place}."),
        ("Then {he} dropped it, and it broke!",
         "Suddenly, the {btoy} fell down and broke into two pieces."),
        ("{N} began to cry.", '"Oh no! My {btoy} is broken!" cried {N}.'),
        ("{H} heard {him} and came to help.", "{H} came to see what was wrong."),
        ('"Do not cry," said {H}. "I can fix it."',
         '"Let me see," said {H}. "We can fix it together."'),
        ("{H} got some glue and fixed the {btoy}.",
         "They used some tape and glue to fix the {btoy}."),
        ("Soon the {btoy} was as good as new.", "The {btoy} was not broken anymore."),
        ('"Thank you!" said {N}, and {he} gave {H} a big hug.',
         "{N} smiled and played with the {btoy} all day."))),
    (False, (  # sharing
        ("{N} and {F} were playing at the {place}.", "One day, {F} came to play with {N}."),
        ("They both wanted to play with the {ctoy}.", "{F} saw {N}'s {ctoy} and wanted it too."),
        ('"It is mine!" said {N}. "No, I want it!" said {F}.',
         "{N} pulled the {toy}, and {F} pulled it too."),
        ("Soon they were both angry.",
         "Then the {toy} fell on the ground, and they both felt sad."),
        ('{His} {fam} saw them and said, "Why not take turns?"',
         '{His} {fam} said, "When we share, everyone can have fun."'),
        ("So they took turns. First {N} played with the {toy}, then {F} played with it.",
         "{N} gave the {toy} to {F} first. Then {F} gave it back."),
        ("They laughed and played together all afternoon.", "Sharing was much more fun."),
        ("{N} learned that sharing is good.", "{N} and {F} were friends again."))),
    (False, (  # afraid of the dark
        ("That night, {N} could not sleep.", "It was bedtime, but {N} was not sleepy."),
        ("The room was very dark, and {he} was scared.",
         "{He} heard a strange noise outside the window."),
        ('"{Fam}! {Fam}!" {he} called.', '"I am scared," {N} said in a small voice.'),
        ("{His} {fam} came in and turned on a little lamp.",
         "{His} {fam} came and sat on the bed."),
        ('"It is only the wind," said {his} {fam}. "You are safe."',
         '"Look, it is just {a_toy} on the chair," said {his} {fam}.'),
        ("Then {famhe} sang a quiet song.", "Then {famhe} gave {N} a soft teddy bear to hold."),
        ("{N} was not scared anymore.", "Soon {N} felt safe and warm."),
        ("{He} closed {his} eyes and fell asleep.", "{He} said good night and went to sleep."))),
    (True, (  # kite in a tree
        ("One windy day, {N} went to the park to fly {his} {color} kite.",
         "{N} had a new {color} kite. One day, {he} took it to the hill."),
        ("The kite flew high into the sky.", "Up, up, up went the kite."),
        ("But then the wind pushed it into a tall tree.",
         "Suddenly, the kite got stuck in a big tree."),
        ("{N} jumped and jumped, but {he} could not reach it.",
         "{N} tried to climb the tree, but it was too tall."),
        ('"Who can help {me}?" said {N}.', "{N} felt sad and sat down under the tree."),
        ("Then {F} came with a long stick and pulled the kite down.",
         "Just then, a big bird landed on the tree and pulled the kite with its beak. "
         "The kite fell down.", "Then a tall giraffe came by and took the kite down."),
        ('"Thank you!" said {N}.', "{N} laughed and clapped {his} hands."),
        ("Soon the kite was flying high again.", "{N} flew the kite until the sun went down."))),
    (True, (  # baking and counting
        ("{N} wanted to bake {a_dish} with {his} {fam}.",
         "On {day}, {N} and {his} {fam} wanted to make {a_dish}."),
        ("They needed {n} eggs.", "The recipe said they needed {n} eggs."),
        ("{N} opened the fridge and counted the eggs. {count_seq}",),
        ('"We only have {m} {m_eggs}!" said {N}.', "There {m_were} only {m} {m_eggs}."),
        ("So they went to the shop to buy more eggs.", '"Let us go to the shop," said {H}.'),
        ("At the shop, {N} picked a box of eggs.", "They bought a box of eggs and some {mass}."),
        ("At home, they mixed the eggs, the milk, and the flour.",
         "Then they mixed everything in a big bowl."),
        ("The {dish} smelled so good!", "Soon the {dish} was ready."),
        ("Everyone had a big piece of {dish}.", "{N} ate two pieces of {dish}."))),
    (False, (  # a new friend
        ("{N} went to a new school.", "{N} and {his} {fam} moved to a new house near the {place}."),
        ("{He} did not know anyone, and {he} felt shy.", "{He} felt a little lonely."),
        ("One day, {he} saw {a_fkind} named {F}.",
         "At the {place}, {he} met {a_fkind} called {F}."),
        ('"Hi, I am {F}," said the {fkind}. "Do you want to play?"',
         '{F} smiled and said, "Do you want to {act} with me?"'),
        ('"Yes, please!" said {N}.', '{N} smiled and said, "Yes!"'),
        ("They {act_past} together.", "They played hide and seek and laughed a lot."),
        ("Now {N} had a new friend, and {he} was not lonely anymore.",
         "From that day on, {N} and {F} were best friends."))),
    (True, (  # lost pet
        ("{N} had a pet {pet} named {Pet}.", "{Pet} was {his_a_pet}."),
        ("One {time}, {Pet} was not in {pet_his} bed.",
         "One day, the gate was open, and {Pet} ran away."),
        ('"{Pet}! {Pet}! Where are you?" called {N}.',),
        ("{He} looked in the garden and in the street.",
         "{N} looked everywhere, but {Pet} was not there."),
        ('{N} asked {F}, "Did you see a little {pet_colour} {pet}?"',),
        ('"Yes," said {F}. "I saw {a_pet} near the {place}."',),
        ("{N} ran to the {place}. There was {Pet}, {pet_doing}!",),
        ("{N} gave {Pet} a big hug.", '"I missed you, {Pet}!" said {N}.'),
        ("From then on, {N} always closed the gate.", "{Pet} never ran away again."))),
    (False, (  # birthday
        ("Today was {N}'s birthday. {He} was {age} years old.",
         "It was {N}'s birthday, and {he} was very excited."),
        ("{His} friends {F} and {F2} came to {his} house.", "{F} came to the party with {F2}."),
        ("They brought a present in {color} paper.", "{F} gave {N} a big box with {a_color} bow."),
        ('"What is it?" asked {N}. {He} opened the present. It was {a_ctoy}!',),
        ("Then {H} brought a big cake with {age} candles.", "Then it was time for the cake."),
        ("Everyone sang a song, and {N} blew out the candles.",),
        ("They ate cake and played games until the evening.", "They ate cake and {inact_past}."),
        ('"This is the best birthday ever!" said {N}.', "{N} hugged {his} friends."))),
    (True, (  # trip to the farm
        ("On {day}, {N} went to the farm with {his} {fam}.",
         "One sunny {time}, {N} visited a farm."),
        ("First, they saw {n} {fanimals}.", "They saw {n} {fanimals} in a big field."),
        ("{fsound_line}",),
        ("Then they saw {a_fanimal2} eating {fdiet2}.",
         "Next, there was {a_fanimal2} near the barn."),
        ("{N} gave the {fanimals} some {fdiet}.", "{N} liked the {fanimal2} best."),
        ("At the end of the day, {N} {was} tired but happy.",
         '"Can {I} come back tomorrow?" asked {N}.'))),
)
ENDINGS = ("It was a very good day.", "That night, {N} went to bed with a big smile.",
           "{N} felt very happy.", "The end.", "And they all lived happily ever after.")
OPEN_ONE = ("Once upon a time, there was {a_kid} named {N}.", "There was once {a_kid} called {N}.",
            "{N} was {a_age} year old {kind}.", "Once there was {a_kid}. {His} name was {N}.",
            "{N} lived with {his} {fam} in {a_colour_house} near the {place}.")
OPEN_TWO = ("Once upon a time, there were two friends named {N}.", "{N} were best friends.",
            "{N} were {siblings}.", "Once there were two little {kids}, {N}.")
DETAILS = ("{He} had {a_ctoy}.", "{He} loved to {act}.", "{His} favorite color was {color}.",
           "{He} liked to eat {food_pl}.", "Every day, {he} played at the {place}.",
           "{He} {was} always {trait}.", "{He} {was} {age} years old.")
