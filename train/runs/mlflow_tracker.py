"""MLflow as an optional tracker (`tracking: mlflow` in a training recipe; `pip install '.[mlflow]'`): the
run's settings as params, the same grouped metrics as TensorBoard on the same step axis, the final numbers,
and report.md / config.yaml as artifacts. The default store is a local folder, RUNS_DIR/mlruns
(`mlflow ui --backend-store-uri RUNS_DIR/mlruns`); `tracking_uri` points elsewhere (a lab's server).
The MLflow run id is kept in RUN/mlflow.json, so `--resume` continues the same MLflow run."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXPERIMENT = "affcache"
ID_FILE = "mlflow.json"
MAX_PARAM = 500  # MLflow's limit on a param value's length


def default_uri(runs_dir: str | Path) -> str:
    return (Path(runs_dir).resolve() / "mlruns").as_uri()


class MlflowTracker:
    def __init__(self, run_path: Path, config: Mapping[str, Any], uri: str | None, resume: bool):
        try:
            import mlflow
        except ImportError:
            raise ValueError("tracking: mlflow needs the mlflow extra: pip install '.[mlflow]'") from None
        from train.runs.tracking import hparam_values

        self._mlflow = mlflow
        run_path = Path(run_path)
        if uri is None:
            uri = default_uri(run_path.parent)
            # MLflow 3 keeps its local file store but asks for consent; the default here is that store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(EXPERIMENT)
        id_file = run_path / ID_FILE
        run_id = json.loads(id_file.read_text())["run_id"] if resume and id_file.is_file() else None
        self._run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_path.name)
        id_file.write_text(json.dumps({"run_id": self._run.info.run_id, "tracking_uri": uri}) + "\n", encoding="utf-8")
        if run_id is None:
            mlflow.log_params({k: str(v)[:MAX_PARAM] for k, v in hparam_values(config).items()})
        self._run_path = run_path

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._mlflow.log_metrics(dict(metrics), step=step)

    def close(self, finished: bool) -> None:
        if finished:
            for name in ("report.md", "config.yaml", "config.json"):
                if (self._run_path / name).is_file():
                    self._mlflow.log_artifact(str(self._run_path / name))
        self._mlflow.end_run(status="FINISHED" if finished else "KILLED")
