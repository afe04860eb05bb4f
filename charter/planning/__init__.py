"""Planning: a request becomes a plan (``planner``), a failed run's rest becomes a revised plan
(``replan``), and ``writes`` says which steps may change the world (so need review).

Planning asks a model and reads the rules' state of a run; it never writes a run.
"""
