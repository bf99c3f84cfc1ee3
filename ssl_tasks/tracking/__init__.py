"""MLflow adapter: the project's only MLflow import."""
