"""The OpenAI-compatible HTTP service: files, fine-tuning jobs, models, chat completions.

app.py builds the FastAPI application from small route modules (files, jobs, models,
chat); worker.py claims queued jobs and runs each in a child process (job_runner.py);
cache.py keeps loaded models for inference. Nothing here is imported by `tunesmith --help`.
"""
