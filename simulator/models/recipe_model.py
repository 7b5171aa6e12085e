"""The recipe flavour's MLflow "model from code": the file ``log_ranker`` passes as ``python_model``.

MLflow stores a copy of this file with the model and runs it when ``mlflow.pyfunc.load_model`` loads the
model. It only imports the installed ``simulator`` package and reads the model's data artifacts
(``context.artifacts``: ``state`` JSON and ``arrays`` .npz, read with ``allow_pickle=False``), so a
registered recipe version runs the installed package's code plus data. stagegate itself serves recipe
versions without running this file at all (simulator.models.pyfunc.load_ranker).
"""

import mlflow
from mlflow.pyfunc import PythonModel


class RecipeModel(PythonModel):
    """Request table in, top-k item lists out (the ``recipe`` flavour's signature)."""

    def load_context(self, context):
        from pathlib import Path

        from simulator.models.pyfunc import ARRAYS_ARTIFACT, STATE_ARTIFACT, read_recipe_model

        self.ranker, self.snapshot, self.k = read_recipe_model(
            Path(context.artifacts[STATE_ARTIFACT]), Path(context.artifacts[ARRAYS_ARTIFACT])
        )

    # no type hints on predict: MLflow would try (and fail) to derive a schema from them
    def predict(self, context, model_input, params=None):
        from simulator.models.pyfunc import predict_frame

        return predict_frame(self.ranker, self.snapshot, self.k, model_input, params)


mlflow.models.set_model(RecipeModel())
