"""SpecBench prompts: one JSON object per line with ``question_id``, ``category`` and ``turns``.

A prompt is one user turn. With ``turns="all"`` a question's later turns are prompts
too; their conversation history holds the earlier turns' answers of the reference row
(``ar``), so every method sees exactly the same token ids (see ``runner``).
"""

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import MirrorError

TURNS = ("first", "all")


@dataclass(frozen=True)
class Question:
    question_id: object
    category: str
    turns: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Prompt:
    question_id: object
    category: str
    turn: int  # 0-based index into the question's turns
    turns: tuple[str, ...]  # the user turns up to and including this one

    @property
    def key(self) -> str:
        return f"{self.question_id}:{self.turn}"


def read_questions(path) -> list[Question]:
    """Every question of a SpecBench-format JSONL file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise MirrorError(f"dataset {path} {what}: pass a SpecBench question.jsonl with --dataset")
    questions = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MirrorError(f"{path} line {number} is not valid JSON ({e.msg} at column {e.colno}): "
                                  "fix or remove the line") from None
            questions.append(_question(obj, path, number))
    if not questions:
        raise MirrorError(f"dataset {path} holds no questions: expected one SpecBench JSON object per line")
    return questions


def _question(obj, path: Path, number: int) -> Question:
    where = f"{path} line {number}"
    if not isinstance(obj, dict):
        raise MirrorError(f"{where} is not a SpecBench question: expected an object with question_id, category, turns")
    missing = [k for k in ("question_id", "category", "turns") if k not in obj]
    if missing:
        raise MirrorError(f"{where} is not a SpecBench question: it lacks {', '.join(missing)}")
    category, turns = obj["category"], obj["turns"]
    if not isinstance(category, str) or not category:
        raise MirrorError(f"{where}: category must be a non-empty string, got {category!r}")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise MirrorError(f"{where}: turns must be a non-empty list of non-empty strings")
    return Question(obj["question_id"], category, tuple(turns), number)


def parse_categories(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise MirrorError("--categories is empty: name at least one category, e.g. --categories qa,math_reasoning")
    return names


def select_prompts(questions: list[Question], per_category: int | None = None, categories: list[str] | None = None,
                   turns: str = "first", source: str = "the dataset") -> list[Prompt]:
    """The first ``per_category`` questions of each category (in file order), as prompts.

    Categories keep the order of their first appearance in the file (or of ``categories``).
    """
    if turns not in TURNS:
        raise MirrorError(f"--turns {turns!r}: choose first or all")
    if per_category is not None and per_category < 1:
        raise MirrorError(f"--per-category {per_category}: must be at least 1")
    by_category: dict[str, list[Question]] = {}
    for q in questions:
        by_category.setdefault(q.category, []).append(q)
    if categories is None:
        categories = list(by_category)
    else:
        empty = [c for c in categories if c not in by_category]
        if empty:
            raise MirrorError(f"category {empty[0]!r} has no prompts in {source} "
                              f"(it has: {', '.join(by_category)})")
    prompts = []
    for category in dict.fromkeys(categories):
        chosen = by_category[category][:per_category] if per_category else by_category[category]
        for q in chosen:
            count = len(q.turns) if turns == "all" else 1
            prompts += [Prompt(q.question_id, q.category, t, q.turns[: t + 1]) for t in range(count)]
    return prompts


def load_prompts(path, per_category: int | None = None, categories: list[str] | None = None,
                 turns: str = "first") -> list[Prompt]:
    return select_prompts(read_questions(path), per_category, categories, turns, source=str(path))
