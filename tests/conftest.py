"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_local_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Local deployments made by tests are recorded in a directory of their own, so the suite
    never sees (or tears down) the deployments of the user running it."""
    state = tmp_path_factory.mktemp("local-state-default")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NISER_LOCAL_STATE_DIR", str(state))
        yield state


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found beside the repo: {SHARED_DATA} is missing")
    return SHARED_DATA


# --- MLflow tracking, a tiny trained model, registration and serving ------------------------------
# Raw ids of the tiny catalogue follow the synthetic generator's scheme (100000 + 7 * k), so
# ``niser.pyfunc.EXAMPLE_REQUEST`` names known items.
TINY_RAW_BASE, TINY_RAW_STEP, TINY_ITEMS = 100_000, 7, 60


def tiny_session_data(seed: int = 0, n_sessions: int = 400, name: str = "tiny-walks"):
    """A small ``SessionData`` of random walks over a successor graph (learnable, seeded)."""
    import numpy as np

    from niser.data import SessionData, augment_prefixes
    from niser.vocab import Vocabulary

    rng = np.random.default_rng(seed)
    successors = rng.integers(1, TINY_ITEMS + 1, size=(TINY_ITEMS + 1, 3))
    sessions = []
    for _ in range(n_sessions):
        session = [int(rng.integers(1, TINY_ITEMS + 1))]
        for _ in range(int(rng.integers(1, 7))):
            follow = rng.random() > 0.2
            session.append(int(successors[session[-1], rng.integers(0, 3)]) if follow
                           else int(rng.integers(1, TINY_ITEMS + 1)))
        sessions.append(session)
    cut = int(0.8 * n_sessions)
    vocab = Vocabulary(TINY_RAW_BASE + TINY_RAW_STEP * np.arange(TINY_ITEMS))
    return SessionData(name, augment_prefixes(sessions[:cut]), augment_prefixes(sessions[cut:]),
                       vocab)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory):
    """A temporary SQLite MLflow (artifacts in a temp dir), set for this process and children."""
    import os

    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                                             "MLFLOW_EXPERIMENT_NAME")}
    previous = mlflow.get_tracking_uri() if saved["MLFLOW_TRACKING_URI"] else None
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    mlflow.set_tracking_uri(uri)
    # the Default experiment's artifact root would be ./mlruns: use one rooted in the temp dir
    experiment_id = mlflow.create_experiment("niser-tests",
                                             artifact_location=(root / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    yield uri
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="session")
def tiny_training():
    """``(data, TrainResult)`` of one short CPU training on ``tiny_session_data`` (seconds)."""
    from niser.train import TrainConfig, train

    data = tiny_session_data()
    config = TrainConfig(epochs=2, dim=16, batch_size=50, device="cpu", seed=0)
    return data, train(data, config, progress=False)


@pytest.fixture(scope="session")
def tiny_recommender(tiny_training):
    """The ``Recommender`` of ``tiny_training``."""
    from niser.inference import Recommender

    data, result = tiny_training
    return Recommender.from_training(result.model, result.config, data)


@pytest.fixture(scope="session")
def registered_model_uri(tracking_uri, tiny_training, tiny_recommender) -> str:
    """The tiny model logged (training and pyfunc) and registered as ``niser``: models:/niser/N."""
    import mlflow

    from niser.registry import log_recommender, log_training, register

    data, result = tiny_training
    with mlflow.start_run(run_name="tiny"):
        log_training(result, data)
        info = log_recommender(tiny_recommender, data.summary(), result.final)
    return register(info.model_uri).model_uri


@pytest.fixture(scope="module")
def serve_model(tracking_uri, tmp_path_factory: pytest.TempPathFactory):
    """``serve_model(model_uri, **local_settings) -> base_url``: a real ``mlflow models serve
    --env-manager local``
    (the local deployer, one instance) answering /ping; every server stops at module teardown."""
    from contextlib import ExitStack

    from deployers.local import LocalDeployer

    deployer = LocalDeployer(state_dir=tmp_path_factory.mktemp("local-deployments"))
    with ExitStack() as stack:

        def serve(model_uri: str, **settings: object) -> str:
            endpoint = stack.enter_context(deployer.deployed(
                model_uri, {"workers": 1, "torch_threads": 1, "startup_timeout_s": 180,
                            **settings}))
            assert endpoint.url is not None
            return endpoint.url

        yield serve
