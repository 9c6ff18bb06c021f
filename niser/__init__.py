"""The NISER session-based recommender: data, model, training, evaluation, serving."""
