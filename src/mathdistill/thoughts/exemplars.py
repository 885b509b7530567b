"""Few-shot exemplars for the teacher prompts, written for this project.

Four GSM8K *train* problems (lines 1, 2, 3 and 150 of train.jsonl), each solved in every format.
Never draw exemplars from a test set.
"""

from __future__ import annotations

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she "
    "needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much "
    "as her parents. How much more money does Betty need to buy the wallet?",
    "In 3 years, Jayden will be half of Ernesto's age. If Ernesto is 11 years old, how many years "
    "old is Jayden now?",
]
ANSWERS = ["72", "10", "5", "4"]

COT = [
    "In April Natalia sold 48 clips.\nIn May she sold half as many: 48 / 2 = 24 clips.\n"
    "Altogether she sold 48 + 24 = 72 clips.\nThe answer is 72.",
    "Weng earns $12 per 60 minutes, so per minute she earns 12 / 60 = $0.2.\n"
    "For 50 minutes she earned 0.2 * 50 = $10.\nThe answer is 10.",
    "Betty has half of $100, which is 100 / 2 = $50.\nHer grandparents give twice what her parents "
    "give: 15 * 2 = $30.\nShe now has 50 + 15 + 30 = $95.\nShe still needs 100 - 95 = $5.\n"
    "The answer is 5.",
    "In 3 years Ernesto will be 11 + 3 = 14 years old.\nJayden will then be half of that: "
    "14 / 2 = 7 years old.\nSo Jayden is 7 - 3 = 4 years old now.\nThe answer is 4.",
]

POT = [
    "clips_april = 48\nclips_may = clips_april / 2\nans = clips_april + clips_may",
    "pay_per_hour = 12\nminutes_worked = 50\npay_per_minute = pay_per_hour / 60\n"
    "ans = pay_per_minute * minutes_worked",
    "wallet_cost = 100\nbetty_savings = wallet_cost / 2\nfrom_parents = 15\n"
    "from_grandparents = 2 * from_parents\n"
    "ans = wallet_cost - (betty_savings + from_parents + from_grandparents)",
    "ernesto_now = 11\nyears_ahead = 3\nernesto_later = ernesto_now + years_ahead\n"
    "jayden_later = ernesto_later / 2\nans = jayden_later - years_ahead",
]

EOT = [
    "% Natalia sold 48 clips in April\napril = 48\n% in May she sold half as many as in April\n"
    "may = april / 2\n% the total over both months\nans = april + may",
    "% Weng earns $12 per hour, i.e. per 60 minutes\nper_minute * 60 = 12\n"
    "% she worked 50 minutes\nans = per_minute * 50",
    "% Betty has half of the $100 she needs\nsavings = 100 / 2\nparents = 15\n"
    "% grandparents give twice as much as parents\ngrandparents = 2 * parents\n"
    "% what she still needs\nsavings + parents + grandparents + ans = 100",
    "% Ernesto is 11 now\nernesto = 11\n% in 3 years Jayden will be half of Ernesto's age then\n"
    "jayden + 3 = (ernesto + 3) / 2\nans = jayden",
]

L2M = [
    "Sub-question 1: How many clips did Natalia sell in May?\n"
    "Answer 1: Half as many as in April: 48 / 2 = 24.\n"
    "Sub-question 2: How many clips did she sell in April and May altogether?\n"
    "Answer 2: 48 + 24 = 72.\nThe answer is 72.",
    "Sub-question 1: How much does Weng earn per minute?\nAnswer 1: 12 / 60 = $0.2.\n"
    "Sub-question 2: How much did she earn in 50 minutes?\nAnswer 2: 0.2 * 50 = $10.\n"
    "The answer is 10.",
    "Sub-question 1: How much money does Betty have?\nAnswer 1: Half of $100: 100 / 2 = $50.\n"
    "Sub-question 2: How much do her grandparents give?\nAnswer 2: Twice $15: 15 * 2 = $30.\n"
    "Sub-question 3: How much does she have in total now?\nAnswer 3: 50 + 15 + 30 = $95.\n"
    "Sub-question 4: How much more does she need?\nAnswer 4: 100 - 95 = $5.\nThe answer is 5.",
    "Sub-question 1: How old will Ernesto be in 3 years?\nAnswer 1: 11 + 3 = 14.\n"
    "Sub-question 2: How old will Jayden be in 3 years?\nAnswer 2: Half of 14: 14 / 2 = 7.\n"
    "Sub-question 3: How old is Jayden now?\nAnswer 3: 7 - 3 = 4.\nThe answer is 4.",
]

KNOWLEDGE = [
    "Knowledge:\n- \"Half as many\" as a quantity means that quantity divided by 2.\n"
    "- A total over several periods is the sum of the amounts in each period.",
    "Knowledge:\n- An hourly rate divided by 60 gives the rate per minute.\n"
    "- Earnings are the rate per unit of time multiplied by the time worked.",
    "Knowledge:\n- \"Twice as much\" means multiplying by 2.\n"
    "- The money still needed is the price minus everything already saved or received.",
    "Knowledge:\n- Everyone's age increases by the same number of years.\n"
    "- To go from a future age back to the present age, subtract the years that pass.\n"
    "- \"Half of\" a quantity means dividing it by 2.",
]

KEYPOINTS = [
    "Core question: How many clips did Natalia sell in April and May together?\nKey points:\n"
    "- Natalia sold 48 clips in April.\n- In May she sold half as many clips as in April.\n"
    "Solution:\n" + COT[0],
    "Core question: How much did Weng earn for 50 minutes of babysitting?\nKey points:\n"
    "- Weng earns $12 per hour.\n- An hour has 60 minutes.\n- She babysat for 50 minutes.\n"
    "Solution:\n" + COT[1],
    "Core question: How much more money does Betty need for the wallet?\nKey points:\n"
    "- The wallet costs $100.\n- Betty has half of the money she needs.\n"
    "- Her parents give her $15.\n- Her grandparents give twice as much as her parents.\n"
    "Solution:\n" + COT[2],
    "Core question: How old is Jayden now?\nKey points:\n- Ernesto is 11 years old now.\n"
    "- In 3 years, Jayden's age will be half of Ernesto's age at that time.\n"
    "Solution:\n" + COT[3],
]
