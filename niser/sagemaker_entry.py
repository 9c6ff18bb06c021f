"""A SageMaker training job's entry point: train NISER on the job's data, log and register it in
MLflow, save the model where SageMaker archives it.

The job runs ``python train.py`` in the source folder that ``source_archive`` packs (this
package, that two-line launcher and a ``requirements.txt`` the AWS PyTorch training container
installs before it starts). It honours SageMaker's training contract, read from the
environment the training toolkit sets:

- ``SM_CHANNEL_TRAIN``: the ``train`` channel's folder, holding one prepared dataset file
  (``*.npz``, ``niser.data.save_prepared``);
- ``SM_HPS``: the hyperparameters as JSON (values decoded as the toolkit decodes them): every
  key is a ``TrainConfig`` field, except the toolkit's own ``sagemaker_*`` keys; an unknown key
  or a bad value fails the job, naming it;
- ``SM_NUM_GPUS``: with GPUs and no ``device`` hyperparameter, training runs on ``cuda``;
- ``SM_MODEL_DIR``: the trained ``Recommender`` (``Recommender.save``), saved before anything is
  logged, so a tracking outage does not lose it; SageMaker uploads it as ``model.tar.gz``;
- ``SM_OUTPUT_DATA_DIR``: ``result.json`` (the MLflow run, the logged model's URI, the
  registration, the test metrics), uploaded as ``output.tar.gz``;
- ``SM_OUTPUT_DIR`` (default ``/opt/ml/output``): on failure, the reason in ``failure`` (SageMaker
  reports that file as the job's ``FailureReason``, at most 1,024 characters) and exit status 1;
- ``NISER_CHECKPOINT_DIR`` (set by the job to its checkpoint folder, ``/opt/ml/checkpoints``,
  which SageMaker keeps in sync with S3): the epoch checkpoint; a restarted (spot) job resumes
  from it.

MLflow is reached as any MLflow client is: ``MLFLOW_TRACKING_URI`` and, when the server needs
them, ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` / ``MLFLOW_TRACKING_TOKEN`` from
the job's environment (nothing here logs them). ``MLFLOW_RUN_ID`` names the run to log into (the
flow's training run, or an HPO trial's run). The model is logged as the serving pyfunc and
registered; ``NISER_REGISTER=0`` skips the registration, and ``NISER_RECOMMENDER_ARTIFACT=<path>``
logs the saved ``Recommender`` folder as that artifact instead of a pyfunc (an HPO trial: the
parent registers the best trial's).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import tarfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_FAILURE_REASON = 1024
LAUNCHER = "train.py"
RESULT_FILE = "result.json"
_LAUNCHER_CODE = ("from niser.sagemaker_entry import main\n\n"
                  "raise SystemExit(main())\n")


class JobError(Exception):
    """The job cannot run as asked (its data or hyperparameters); the message is the reason."""


def hyperparameters(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``TrainConfig`` fields of ``SM_HPS`` (the toolkit's ``sagemaker_*`` keys dropped)."""
    try:
        raw = json.loads(env.get("SM_HPS") or "{}")
    except ValueError as exc:
        raise JobError(f"SM_HPS is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise JobError(f"SM_HPS must be a JSON object, got {type(raw).__name__}")
    hps = {k: v for k, v in raw.items() if not k.startswith("sagemaker_")}
    if "device" not in hps and int(env.get("SM_NUM_GPUS") or 0) > 0:
        hps["device"] = "cuda"
    return hps


def train_config(hps: Mapping[str, Any]) -> Any:
    """``TrainConfig`` of ``hps``; ``JobError`` naming each bad hyperparameter and its value."""
    from pydantic import ValidationError

    from niser.train import TrainConfig

    try:
        return TrainConfig.model_validate(dict(hps))
    except ValidationError as exc:
        problems = [f"hyperparameter {'.'.join(map(str, e['loc']))}={e.get('input')!r}: "
                    f"{e['msg']}" for e in exc.errors()]
        raise JobError("; ".join(problems)) from None


def dataset_file(channel: Path) -> Path:
    """The one prepared dataset file of the ``train`` channel."""
    if not channel.is_dir():
        raise JobError(f"the train channel {channel} is not a folder")
    found = sorted(channel.rglob("*.npz"))
    if len(found) != 1:
        raise JobError(f"the train channel {channel} must hold exactly one prepared dataset "
                       f"file (*.npz), found {[p.name for p in found]}")
    return found[0]


def run(env: Mapping[str, str]) -> dict[str, Any]:
    """Train, save, log, register (module docstring); returns what ``result.json`` holds."""
    import mlflow

    from niser.data import load_prepared
    from niser.inference import Recommender
    from niser.registry import log_recommender, log_training, register
    from niser.train import EpochResult, train

    config = train_config(hyperparameters(env))
    data = load_prepared(dataset_file(Path(env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))))
    model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
    out_dir = Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    checkpoints = env.get("NISER_CHECKPOINT_DIR") or None

    def epoch_line(e: EpochResult) -> None:
        print(f"epoch {e.epoch}/{config.epochs}: loss {e.loss:.4g}, val Recall@20 "
              f"{e.validation.get('recall_20', float('nan')):.2f}, MRR@20 "
              f"{e.validation.get('mrr_20', float('nan')):.2f} "
              f"({e.train_seconds + e.eval_seconds:.1f} s)", flush=True)

    print(f"training on {data.name} ({len(data.train)} samples), {config.epochs} epochs",
          flush=True)
    result = train(data, config, on_epoch=epoch_line, checkpoint_dir=checkpoints,
                   resume=checkpoints is not None, progress=False)
    rec = Recommender.from_training(result.model, config, data)
    model_dir.mkdir(parents=True, exist_ok=True)
    rec.save(model_dir)
    artifact = env.get("NISER_RECOMMENDER_ARTIFACT") or None
    with mlflow.start_run(run_id=env.get("MLFLOW_RUN_ID") or None) as active:
        run_id = active.info.run_id
        log_training(result, data, config, run_id=run_id)
        if artifact:
            mlflow.log_artifacts(str(model_dir), artifact)
            model_uri = f"runs:/{run_id}/{artifact}"
        else:
            model_uri = log_recommender(rec, data.summary(), result.final).model_uri
    out: dict[str, Any] = {"run_id": run_id, "model_uri": model_uri,
                           "metrics": result.final, "best_epoch": result.best_epoch,
                           "epochs_run": len(result.history), "registration": None}
    if env.get("NISER_REGISTER", "1") != "0" and not artifact:
        reg = register(model_uri)
        out["registration"] = {"name": reg.name, "version": reg.version, "alias": reg.alias,
                               "reason": reg.reason, "previous_champion": reg.previous_champion}
        print(f"registered {reg.name} version {reg.version} as {reg.alias} ({reg.reason})",
              flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULT_FILE).write_text(json.dumps(out, indent=2))
    return out


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the job; on failure write the reason to ``$SM_OUTPUT_DIR/failure`` and return 1."""
    env = os.environ if env is None else env
    try:
        run(env)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
        out = Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "failure").write_text(reason[:MAX_FAILURE_REASON])
        if not isinstance(exc, JobError):
            traceback.print_exc()
        print(f"training failed: {reason}", file=sys.stderr, flush=True)
        return 1
    return 0


def requirements() -> list[str]:
    """What the training container installs: the runtime pins except torch (the container's
    own build, CPU or CUDA as the instance needs)."""
    from niser.registry import pip_requirements

    return [r for r in pip_requirements() if not r.startswith("torch==")]


def source_archive(dest: Path) -> Path:
    """``sourcedir.tar.gz`` at ``dest``: this package's Python files under ``niser/``, the
    launcher ``train.py`` and ``requirements.txt`` (the layout the training toolkit runs). The
    same sources give the same bytes (no timestamps), so the archive's hash names its content."""
    package = Path(__file__).resolve().parent
    files = [(f"niser/{p.relative_to(package).as_posix()}", p.read_bytes())
             for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts]
    files += [(LAUNCHER, _LAUNCHER_CODE.encode()),
              ("requirements.txt", ("\n".join(requirements()) + "\n").encode())]
    with dest.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, blob in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return dest
