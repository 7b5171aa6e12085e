"""A ranker trained outside stagegate (scikit-learn), logged with mlflow.pyfunc.log_model to the ranking
contract (stagegate.contract) and promoted like any candidate; see README.md and docs/bring-your-own.md."""
