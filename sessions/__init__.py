"""The session manager of the seed paper's Figure 2, in front of any deployment.

A web shop sends each visitor's click here; the session manager appends it to the visitor's
session and asks the recommender for the top k of the whole session so far. The recommender only
ever sees whole sessions.

- ``sessions.store``: where sessions live (SQLite by default, Redis on request), with expiry and
  a cap on the clicks kept.
- ``sessions.app``: the HTTP service (FastAPI), calling a deployment through its deployer's
  invoker.
- ``sessions.server``: running it (uvicorn, 127.0.0.1, a free port) and its command line,
  ``niser-mlops session-server``.

Data flows one way: a click -> the store -> the deployment's invoker -> the answer.
"""
