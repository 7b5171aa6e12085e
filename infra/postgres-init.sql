-- One database per component (docker-compose.yaml). `stagegate up --postgres URL` creates the same ones.
CREATE DATABASE stagegate_prefect;
CREATE DATABASE stagegate_mlflow;
CREATE DATABASE stagegate_events;
