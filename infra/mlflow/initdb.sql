-- Run once by the postgres image on an empty volume: the database for MLflow's users and permissions.
CREATE DATABASE mlflow_auth OWNER mlflow;
