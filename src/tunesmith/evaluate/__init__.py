"""Evaluation: is the tuned model better than the base model, than prompting it with
examples, and than retrieving similar examples into the prompt? And what did it forget?

    graders.py      score one reply against one item (the recipe's grader definitions)
    sandbox.py      runs user Python graders in a child process with a timeout
    similarity.py   token F1, ROUGE-L, fuzzy ratio
    bm25.py         the retrieval baseline's ranking
    examples.py     held-out items: prompt, reference, rendered example; few-shot prompts
    stats.py        seeded bootstrap intervals and win/tie/loss
    models.py       what is evaluated, the base it is compared with, per-example losses
    forgetting.py   loss (and scores) on a general reference set before and after tuning
    runner.py       evaluate a run or model: losses, generations, grades, analysis -> report
    report.py       the verdict, report.json; report_html.py the self-contained report.html
"""
