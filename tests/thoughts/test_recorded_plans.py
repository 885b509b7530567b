"""Recorded plan-only rationales as knowledge / key points (the offline stand-in of LoRID and KPDD),
the number-quoting measure, and key points that must come with a solution."""

from __future__ import annotations

import pytest

from mathdistill import thoughts
from mathdistill.thoughts.keypoints import KeyPoints, core_question, parse
from mathdistill.thoughts.knowledge import Knowledge, parse_items, question_numbers, quotes_question, sentences, strip_answer

# three records of teacher/gsm8k_train_gemini-1.5-flash_plan.json, as recorded (leading space included)
Q_CLIPS = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
PLAN_CLIPS = (" Calculate the number of clips sold in May, and then add that number to the number of clips sold "
              "in April.  The answer is 72")
Q_IPHONE = ("The price of an iPhone fell 10% in a particular month and another 20% in the second month.  If the "
            "initial price was $1000, calculate the price after the second month.")
PLAN_IPHONE = (" Calculate the price after the first month by subtracting 10% of the initial price. Calculate the "
               "price after the second month by subtracting 20% of the price after the first month.  The answer is 720")
Q_VIDEO = ("A YouTube video is 100 hours long. Lila decides to watch it at two times the average speed. Roger, her "
           "friend, also watch the same video at the average speed. If they both watched six of the same videos, "
           "what's the total number of hours they watched?")
PLAN_VIDEO = (" Lila watches at twice the speed, so she takes half the time (100 hours / 2 = 50 hours). Roger watches "
              "at normal speed, so he takes 100 hours. Together they watch 150 hours per video (50 + 100 = 150). They "
              "watch 6 videos, so the total time is 900 hours (150 hours/video * 6 videos = 900 hours).The answer is 900")


def test_the_answer_sentence_is_cut_and_the_rest_split_into_sentences():
    assert strip_answer(PLAN_CLIPS).endswith("clips sold in April.")
    assert strip_answer(PLAN_VIDEO).endswith("= 900 hours).")  # no space before "The answer is"
    assert strip_answer("Add them. So the final answer is 5.") == "Add them."
    assert strip_answer("No answer sentence here.") == "No answer sentence here."
    assert sentences("It costs 0.5 per hour. Then 2.5 more.Add both, ") == ["It costs 0.5 per hour.", "Then 2.5 more.", "Add both"]
    assert sentences("Let x be Mrs. Snyder's income. Dr. Lee adds 3.") == ["Let x be Mrs. Snyder's income.", "Dr. Lee adds 3."]


def test_knowledge_from_a_recorded_plan():
    k = thoughts.get("knowledge")
    text = Knowledge.from_recorded(PLAN_IPHONE)
    assert text == ("Knowledge:\n- Calculate the price after the first month by subtracting 10% of the initial price.\n"
                    "- Calculate the price after the second month by subtracting 20% of the price after the first month.")
    assert k.validate(text, "720", Q_IPHONE) is None
    assert k.validate(Knowledge.from_recorded(PLAN_CLIPS), "72", Q_CLIPS) is None
    # a plan that computes the answer on the way still states it once the answer sentence is gone
    assert k.validate(Knowledge.from_recorded(PLAN_VIDEO), "900", Q_VIDEO) == "knowledge states the answer"
    assert Knowledge.from_recorded(" The answer is 5") == ""
    assert k.validate(Knowledge.from_recorded(" The answer is 5"), "5", "x?") == "empty knowledge"
    assert k.validate(PLAN_CLIPS, "72", Q_CLIPS) == "knowledge states the answer"  # uncut, it would leak


def test_share_of_items_quoting_a_number_of_the_question():
    assert quotes_question("Subtract 10% of the initial price.", Q_IPHONE)
    assert not quotes_question("Half as many means dividing by 2.", Q_CLIPS)  # 2 is not in the question
    assert not quotes_question("A total is the sum of its parts.", Q_CLIPS)
    rows = [{"question": Q_IPHONE, "text": Knowledge.from_recorded(PLAN_IPHONE), "kept": True},  # 2 items, both quote
            {"question": Q_CLIPS, "text": Knowledge.from_recorded(PLAN_CLIPS), "kept": True},    # 1 item, none
            {"question": Q_VIDEO, "text": Knowledge.from_recorded(PLAN_VIDEO), "kept": False}]   # not kept: not counted
    assert question_numbers(rows) == {"items": 3, "quoting": 2, "share": 0.6667}
    assert question_numbers(rows[2:]) == {"items": 0, "quoting": 0, "share": None}
    general = [{"question": Q_CLIPS, "text": "Knowledge:\n" + "\n".join(f"- {x}" for x in
                ["\"Half as many\" means dividing by 2.", "A total is the sum of its parts."]), "kept": True}]
    assert len(parse_items(general[0]["text"])) == 2 and question_numbers(general)["share"] == 0.0


def test_key_points_from_a_recorded_plan_then_a_solution():
    assert core_question(Q_CLIPS) == "How many clips did Natalia sell altogether in April and May?"
    assert core_question(Q_IPHONE) == "If the initial price was $1000, calculate the price after the second month."
    points = KeyPoints.from_recorded(PLAN_IPHONE, Q_IPHONE)
    p = parse(points)
    assert p["core_question"].startswith("If the initial price") and len(p["key_points"]) == 2 and not p["solution"]
    cot = "After the first month: 1000 - 100 = 900.\nAfter the second: 900 - 180 = 720.\nThe answer is 720."
    full = KeyPoints.compose(points, cot)
    assert parse(full)["solution"] == cot and parse(full)["key_points"] == p["key_points"]
    assert KeyPoints(solution="cot").validate(full, "720", Q_IPHONE) is None
    assert KeyPoints(solution="cot").validate(full, "700", Q_IPHONE).startswith("wrong answer")
    pot = KeyPoints.compose(points, "price = 1000\nprice = price * 0.9\nans = price * 0.8")
    s = KeyPoints(solution="pot").score(pot, "720", Q_IPHONE)
    assert s.correct and s.prediction == "720"  # the program ran in the sandbox
    leaky = KeyPoints.compose(KeyPoints.from_recorded(PLAN_VIDEO, Q_VIDEO), "The answer is 900.")
    assert KeyPoints().validate(leaky, "900", Q_VIDEO) == "key points state the answer"


@pytest.mark.parametrize("solution", ["cot", "pot"])
def test_key_points_without_a_solution_are_not_a_valid_kpdd_target(solution):
    """Before: score_batch marked key points with no Solution part correct; now they need one unless
    key points alone are asked for (`KeyPoints(solution=None)`)."""
    points = KeyPoints.from_recorded(PLAN_CLIPS, Q_CLIPS)
    s = KeyPoints(solution=solution).score(points, "72", Q_CLIPS)
    assert not s.correct and s.error == "no solution part" and s.prediction is None
    assert KeyPoints(solution=None).validate(points, "72", Q_CLIPS) is None
    assert KeyPoints(solution=None).validate(KeyPoints.compose(points, "The answer is 70."), "72", Q_CLIPS).startswith(
        "wrong answer")  # a solution that is there is still checked
    # the student side (evaluation's judge) never counted them: no answer to score
    from mathdistill.student.sample import judge

    assert not judge("keypoints")([points], ["72"])[0].correct
