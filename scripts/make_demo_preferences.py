"""Write the demo's preference pairs (llama_stack_provider_trl/demo/data/*.jsonl); run once, the files are committed.

The preference: answer with just the answer ("Paris.") rather than restating the question around it ("The capital
of France is Paris."). Both are correct and nearly as long; SmolLM2-135M-Instruct prefers the restatement, so the
held-out accuracy starts low and DPO has something to teach that carries over to unseen questions.

    python scripts/make_demo_preferences.py
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "llama_stack_provider_trl" / "demo" / "data"
HELDOUT = 40

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Russia": "Moscow",
    "China": "Beijing",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Argentina": "Buenos Aires",
    "Chile": "Santiago",
    "Mexico": "Mexico City",
    "Cuba": "Havana",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Belgium": "Brussels",
    "the Netherlands": "Amsterdam",
    "South Korea": "Seoul",
    "Vietnam": "Hanoi",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Colombia": "Bogota",
    "New Zealand": "Wellington",
}
OPPOSITE = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "happy": "sad",
    "up": "down",
    "light": "dark",
    "open": "closed",
    "early": "late",
    "full": "empty",
    "strong": "weak",
    "rich": "poor",
    "wet": "dry",
    "loud": "quiet",
    "hard": "soft",
    "young": "old",
    "tall": "short",
    "first": "last",
    "push": "pull",
    "win": "lose",
    "inside": "outside",
}
BABIES = {
    "cat": "a kitten",
    "dog": "a puppy",
    "cow": "a calf",
    "sheep": "a lamb",
    "horse": "a foal",
    "goat": "a kid",
    "duck": "a duckling",
    "frog": "a tadpole",
    "kangaroo": "a joey",
    "bear": "a cub",
    "swan": "a cygnet",
    "goose": "a gosling",
}
PLURALS = {
    "mouse": "mice",
    "child": "children",
    "foot": "feet",
    "tooth": "teeth",
    "goose": "geese",
    "man": "men",
    "woman": "women",
    "person": "people",
    "leaf": "leaves",
    "knife": "knives",
    "cactus": "cacti",
    "fish": "fish",
    "sheep": "sheep",
    "ox": "oxen",
}
LEGS = {
    "spider": "eight",
    "insect": "six",
    "dog": "four",
    "bird": "two",
    "octopus": "eight arms",
    "ant": "six",
    "horse": "four",
    "chicken": "two",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def questions(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, bare answer, answer restating the question)."""
    qs = [(f"What is the capital of {c}?", f"{cap}.", f"The capital of {c} is {cap}.") for c, cap in CAPITALS.items()]
    qs += [
        (f"What is the opposite of {w}?", f"{_cap(o)}.", f"The opposite of {w} is {o}.") for w, o in OPPOSITE.items()
    ]
    qs += [(f"What is a baby {a} called?", f"{_cap(b)}.", f"A baby {a} is called {b}.") for a, b in BABIES.items()]
    qs += [(f"What is the plural of {w}?", f"{_cap(p)}.", f"The plural of {w} is {p}.") for w, p in PLURALS.items()]
    for animal, legs in LEGS.items():
        limbs = legs if " " in legs else f"{legs} legs"
        article = "an" if animal[0] in "aeiou" else "a"
        question = f"How many {limbs.split()[-1]} does {article} {animal} have?"
        qs.append((question, f"{_cap(legs.split()[0])}.", f"{_cap(article)} {animal} has {limbs}."))
    qs += [
        (f"What day comes after {d}?", f"{DAYS[(i + 1) % 7]}.", f"The day after {d} is {DAYS[(i + 1) % 7]}.")
        for i, d in enumerate(DAYS)
    ]
    qs += [
        (f"What month comes after {m}?", f"{MONTHS[(i + 1) % 12]}.", f"The month after {m} is {MONTHS[(i + 1) % 12]}.")
        for i, m in enumerate(MONTHS)
    ]
    for _ in range(20):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        qs.append((f"What is {a} times {b}?", f"{a * b}.", f"{a} times {b} is {a * b}."))
    for _ in range(16):
        a, b = rng.randint(10, 60), rng.randint(10, 40)
        qs.append((f"What is {a} plus {b}?", f"{a + b}.", f"{a} plus {b} is {a + b}."))
    for h in range(2, 10):
        qs.append((f"How many minutes are in {h} hours?", f"{h * 60}.", f"There are {h * 60} minutes in {h} hours."))
    return list(dict.fromkeys(qs))  # random arithmetic may repeat a question


def row(question: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def main() -> None:
    rng = random.Random(0)
    rows = [row(*q) for q in questions(rng)]
    rng.shuffle(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, split in (("heldout", rows[:HELDOUT]), ("train", rows[HELDOUT:])):
        with (OUT / f"preferences_{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in split)
        print(f"{name}: {len(split)} pairs")


if __name__ == "__main__":
    main()
