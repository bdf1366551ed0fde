"""Step 2's crowd engine: which questions are asked, who answers them, and what the answers decide.

Imports flow one way, from the top of this list to the bottom:

* ``dispatch/``: leasing questions to workers and storing their answers, by the rules of
  ``dispatch/rules.py``, in memory for the simulator (``memory.py``) or in the database for the server
  (``database.py``, its statements in ``statements.py``);
* ``policies/``: which questions to ask next (``fixed.py``, ``adaptive.py`` with its model in
  ``posteriors.py``), registered by name in ``base.py``;
* ``closing.py``: closing a question and what its decision sets in motion;
* ``questions.py``: creating question rows; ``gold.py``: gold questions from ground-truth masks;
* ``quality.py``: live quality control of workers;
* ``votes.py``: how many answers a question wants; ``kinds.py``: every kind of question.
"""
